"""Processes by title, for fault injection by PID (the worker-kill test, the soak): Ray names
its workers ``ray::<Actor>`` and Serve's replicas ``ray::ServeReplica:<app>:<deployment>``;
and stopping a process group the benches started."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from pathlib import Path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the kernel picks it).

    There is a small window before the server binds it; a server that loses the race exits
    at once, and whoever started it reports that with the server's log.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


def stop_group(
    proc: subprocess.Popen, term_wait_s: float = 90.0, kill_wait_s: float = 30.0
) -> None:
    """Stop a process started with ``start_new_session`` and everything in its process group
    (a ``serve run`` or ``ray start`` and the local Ray under it): SIGTERM, then, once it has
    exited or ``term_wait_s`` passed, SIGKILL to whatever of the group is left."""
    for sig, wait in ((signal.SIGTERM, term_wait_s), (signal.SIGKILL, kill_wait_s)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            pass
