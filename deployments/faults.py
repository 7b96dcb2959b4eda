"""Fault injection for tests of degradation paths (a shadow or a branch that fails or hangs)."""

from __future__ import annotations

import asyncio


async def inject_fault(fail_with: str | None, what: str) -> None:
    """``"error"`` raises, ``"hang"`` never returns (in practice), None does nothing."""
    if fail_with == "error":
        raise RuntimeError(f"injected {what} failure")
    if fail_with == "hang":
        await asyncio.sleep(3600)
