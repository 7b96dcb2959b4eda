"""Fixtures of the job tests."""

from __future__ import annotations

import os

import pytest
import ray


@pytest.fixture(scope="module")
def ray_session(tmp_path_factory):
    """A small local Ray for a module of job tests; shares the session's cluster when the
    serve tests started one."""

    if ray.is_initialized():
        yield
        return
    os.environ.setdefault("RAY_TMPDIR", str(tmp_path_factory.mktemp("ray")))
    ray.init(address="local", num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()
