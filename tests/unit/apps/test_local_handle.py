"""A deployment class held inside the ingress is called exactly as its handle would be."""

from __future__ import annotations

import asyncio
import threading

import pytest

from apps.common import LocalHandle


class Branch:
    def __init__(self):
        self.calls: list[tuple[str, int]] = []

    async def search(self, q: str, k: int) -> list[str]:
        return [q] * k

    def info(self) -> int:  # sync: runs off the event loop, as a replica's sync method does
        self.calls.append(("info", threading.get_ident()))
        return 7

    async def broken(self) -> None:
        raise LookupError("no such video")


def test_remote_awaits_async_and_sync_methods_of_the_same_instance():
    b = Branch()
    h = LocalHandle(b)

    async def run():
        loop_thread = threading.get_ident()
        assert await h.search.remote("bikes", k=2) == ["bikes", "bikes"]
        assert await h.info.remote() == 7
        assert b.calls[0][1] != loop_thread  # a worker thread, not the caller's loop
        with pytest.raises(LookupError, match="no such video"):  # errors propagate as raised
            await h.broken.remote()

    asyncio.run(run())
    assert h.target is b
    with pytest.raises(AttributeError):
        h.no_such_method  # noqa: B018
