"""Processes by title, for fault injection by PID (the worker-kill test, the soak): Ray names
its workers ``ray::<Actor>`` and Serve's replicas ``ray::ServeReplica:<app>:<deployment>``."""

from __future__ import annotations

import os
import signal
from pathlib import Path


def pids_of(title: str) -> list[int]:
    """PIDs of this user's processes whose command line starts with ``title`` (Linux /proc)."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            if d.stat().st_uid != os.getuid():
                continue
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if cmd.startswith(title):
            out.append(int(d.name))
    return sorted(out)


def kill(pid: int) -> None:
    """SIGKILL: no cleanup, no goodbye, as a lost machine or an OOM kill."""
    os.kill(pid, signal.SIGKILL)
