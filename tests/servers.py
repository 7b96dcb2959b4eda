"""Real throwaway servers for tests: PostgreSQL, Redis and an S3 API (moto).

Each server runs as a child process of the test process, listens only on loopback (or on a unix
socket in a private temp folder), and is stopped through the ``Popen`` object that started it:
signalling that PID is safe because it cannot be reused before we reap it, and nothing is ever
killed by name. ``atexit`` stops whatever is still running when pytest exits (a normal exit or
Ctrl-C; a SIGKILLed pytest cannot clean up).

    with PostgresServer() as pg:
        engine = sqlalchemy.create_engine(pg.create_database("t"))
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from glob import glob
from pathlib import Path
from typing import Self

import botocore.session

from mlsd.procs import free_port

__all__ = ["MotoS3Server", "PostgresServer", "RedisServer", "free_port"]


class _Server:
    """One child process and one temp folder, with the start/stop bookkeeping they share."""

    prefix = "mlsd-"
    stop_signal: signal.Signals = signal.SIGTERM
    start_timeout = 30.0

    def __init__(self) -> None:
        self.pid: int | None = None  # kept after stop(), so tests can check the PID is gone
        self._proc: subprocess.Popen[bytes] | None = None
        self._dir: Path | None = None

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> Self:
        if self._proc is not None:
            raise RuntimeError(f"{type(self).__name__} already started (pid {self.pid})")
        self._dir = Path(tempfile.mkdtemp(prefix=self.prefix))
        atexit.register(self.stop)
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Signal the PID we started, wait, SIGKILL if it lingers, remove the temp folder.

        Idempotent: safe to call twice, before start(), or after the server died.
        """
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(self.stop_signal)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
        atexit.unregister(self.stop)

    def pause(self) -> None:
        """Stop the server process but keep its data: an outage; ``resume`` ends it."""
        assert self._proc is not None, "not started"
        self._proc.send_signal(self.stop_signal)
        self._proc.wait(timeout=15)

    def resume(self) -> Self:
        """Start the server again on the same data, socket and port, and wait until ready."""
        assert self._proc is not None and self._proc.poll() is not None, "not paused"
        self._spawn(*self._spawned)
        self._wait_until(self._ready, "ready again")
        return self

    def __enter__(self) -> Self:
        return self if self._proc is not None else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- for subclasses -------------------------------------------------------------------
    def _start(self) -> None:
        raise NotImplementedError

    @property
    def _log(self) -> Path:
        assert self._dir is not None
        return self._dir / "server.log"

    def _spawn(self, argv: list[str], kwargs: dict | None = None, /, **kw) -> None:
        """Start the server in the foreground, stdout and stderr into the log."""
        kwargs = {**(kwargs or {}), **kw}
        self._spawned = (argv, kwargs)
        with open(self._log, "ab") as log:
            self._proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, **kwargs
            )
        self.pid = self._proc.pid

    def _wait_until(self, ready: Callable[[], bool], what: str) -> None:
        """Poll ``ready()`` until true; fail early if the server exits, with its log tail."""
        assert self._proc is not None
        self._ready = ready
        deadline = time.monotonic() + self.start_timeout
        while True:
            if self._proc.poll() is not None:
                self._fail(f"exited with code {self._proc.returncode} before {what}")
            if ready():
                return
            if time.monotonic() > deadline:
                self._fail(f"not {what} after {self.start_timeout:.0f} s")
            time.sleep(0.05)

    def _fail(self, why: str) -> None:
        raise RuntimeError(f"{type(self).__name__} (pid {self.pid}) {why}; log:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        """The last lines the server wrote (for error messages)."""
        try:
            text = self._log.read_text(errors="replace")
        except (OSError, AssertionError):
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


# -- PostgreSQL ---------------------------------------------------------------------------


def _pg_bindir() -> Path | None:
    """Where ``initdb`` and ``postgres`` live: $PG_BINDIR, Debian's newest version, pg_config.

    Debian's ``pg_config --bindir`` may name the client-only folder, so the server folders
    /usr/lib/postgresql/<version>/bin are searched first, newest version first.
    """
    candidates = [os.environ.get("PG_BINDIR", "")]

    def version(initdb: str) -> tuple[int, ...]:
        return tuple(int(n) for n in re.findall(r"\d+", Path(initdb).parent.parent.name))

    debian = sorted(glob("/usr/lib/postgresql/*/bin/initdb"), key=version, reverse=True)
    candidates += [str(Path(p).parent) for p in debian]
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, timeout=10)
        candidates.append(out.stdout.strip())
    candidates.append(str(Path(shutil.which("initdb") or "/nonexistent").parent))
    for c in candidates:
        if c and (Path(c) / "initdb").is_file() and (Path(c) / "postgres").is_file():
            return Path(c)
    return None


def _pg_user() -> str:
    """The unprivileged user that runs initdb and postgres when we are root (both refuse root).

    Debian's postgresql package creates ``postgres``; otherwise a system user ``mlsd-pg``.
    """
    for name in ("postgres", "mlsd-pg"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "mlsd-pg"],
        check=True,
        capture_output=True,
    )
    return "mlsd-pg"


class PostgresServer(_Server):
    """A private PostgreSQL cluster on a unix socket in a temp folder (no TCP at all).

    User ``mlsd`` with trust auth; ``url()`` gives SQLAlchemy URLs for psycopg 3.
    """

    prefix = "mlsd-pg-"
    # SIGTERM is postgres' "smart" shutdown, which waits for every client (an SQLAlchemy pool
    # still holding connections) to disconnect; SIGINT is "fast": it ends the sessions.
    stop_signal = signal.SIGINT
    user = "mlsd"

    def __init__(self, fsync: bool = False) -> None:
        """``fsync``: durable commits, as a production server (benchmarks); off for tests."""
        super().__init__()
        self.fsync = fsync

    @staticmethod
    def available() -> bool:
        return _pg_bindir() is not None

    @property
    def sockdir(self) -> str:
        assert self._dir is not None, "not started"
        return str(self._dir)

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql+psycopg://{self.user}@/{dbname}?host={self.sockdir}"

    def create_database(self, name: str) -> str:
        """CREATE DATABASE ``name``; returns its SQLAlchemy URL."""
        from psycopg import sql

        with self._connect() as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)

    def _connect(self, timeout: int = 5):
        import psycopg

        return psycopg.connect(
            host=self.sockdir,
            user=self.user,
            dbname="postgres",
            autocommit=True,
            connect_timeout=timeout,
        )

    def _start(self) -> None:
        import psycopg

        bindir = _pg_bindir()
        if bindir is None:
            raise RuntimeError("PostgreSQL server binaries not found (set $PG_BINDIR)")
        assert self._dir is not None
        as_user: dict = {}
        if os.geteuid() == 0:
            # initdb/postgres refuse root. Popen(user=, group=) switches user in the child
            # before exec, so the PID we hold is the postmaster itself, not a runuser wrapper.
            pw = pwd.getpwnam(_pg_user())
            os.chown(self._dir, pw.pw_uid, pw.pw_gid)  # mkdtemp is 0700 root
            as_user = {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}
        data = self._dir / "data"
        init = subprocess.run(
            [str(bindir / "initdb"), "-D", str(data), "--auth=trust", "-U", self.user]
            + ["--encoding=UTF8", "--locale=C", "--no-sync"],
            capture_output=True,
            text=True,
            cwd=self._dir,
            **as_user,
        )
        if init.returncode != 0:
            raise RuntimeError(f"initdb failed ({init.returncode}):\n{init.stdout}{init.stderr}")
        # fsync=off: a crash may corrupt the cluster, which is thrown away anyway; it makes
        # CREATE DATABASE and commits much faster.
        settings = {
            "listen_addresses": "",
            "fsync": "on" if self.fsync else "off",
            "max_connections": "200",
            "unix_socket_permissions": "0777",
        }
        argv = [str(bindir / "postgres"), "-D", str(data), "-k", self.sockdir]
        for key, value in settings.items():
            argv += ["-c", f"{key}={value}"]
        self._spawn(argv, cwd=self._dir, **as_user)

        def ready() -> bool:
            try:
                self._connect(timeout=1).close()
            except psycopg.OperationalError:
                return False
            return True

        self._wait_until(ready, "accepting connections")


# -- Redis --------------------------------------------------------------------------------


class RedisServer(_Server):
    """``redis-server`` on a free 127.0.0.1 port, no persistence, data dir in a temp folder."""

    prefix = "mlsd-redis-"
    binary = "redis-server"

    def __init__(self) -> None:
        super().__init__()
        self.port: int | None = None

    @classmethod
    def available(cls) -> bool:
        return shutil.which(cls.binary) is not None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def ping(self) -> bool:
        """PING over a raw socket (no redis-py needed)."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(b"*1\r\n$4\r\nPING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def _start(self) -> None:
        binary = shutil.which(self.binary)
        if binary is None:
            raise RuntimeError("redis-server not found (apt-get install redis-server)")
        self.port = free_port()
        argv = [binary, "--port", str(self.port), "--bind", "127.0.0.1"]
        argv += ["--save", "", "--appendonly", "no", "--daemonize", "no", "--dir", str(self._dir)]
        self._spawn(argv, cwd=self._dir)
        self._wait_until(self.ping, "answering PING")


# -- S3 (moto) ----------------------------------------------------------------------------


class MotoS3Server(_Server):
    """moto's server mode on a free 127.0.0.1 port: the S3 API (and other AWS APIs), in memory.

    Run with this interpreter (``python -m moto.server``), so it works from whichever venv
    runs the tests. Credentials are fake (``testing``); moto does not check signatures.
    """

    prefix = "mlsd-moto-"
    key = secret = "testing"
    region = "us-east-1"

    def __init__(self) -> None:
        super().__init__()
        self.port: int | None = None

    @staticmethod
    def available() -> bool:
        try:
            import moto.server  # noqa: F401
        except ImportError:
            return False
        return True

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        """Environment that points botocore, hence s3fs/fsspec ``s3://``, at this server.

        botocore reads ``AWS_ENDPOINT_URL_S3`` (S3 only) and ``AWS_ENDPOINT_URL`` (every
        service) itself, so s3fs with no ``endpoint_url`` honours both. fsspec caches
        filesystem instances by constructor arguments, not by environment: after changing
        these, use ``skip_instance_cache=True`` or ``s3fs.S3FileSystem.clear_instance_cache()``.
        """
        no_proxy = ",".join(filter(None, [os.environ.get("NO_PROXY", ""), "127.0.0.1"]))
        return {
            "AWS_ENDPOINT_URL_S3": self.endpoint,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.key,
            "AWS_SECRET_ACCESS_KEY": self.secret,
            "AWS_DEFAULT_REGION": self.region,
            "NO_PROXY": no_proxy,
            "no_proxy": no_proxy,
        }

    def storage_options(self) -> dict[str, str]:
        """fsspec/s3fs keyword arguments for this server, without touching the environment."""
        return {"endpoint_url": self.endpoint, "key": self.key, "secret": self.secret}

    def create_bucket(self, name: str) -> None:
        """Create bucket ``name`` with botocore (moto depends on it; unsigned PUTs get 400)."""

        client = botocore.session.get_session().create_client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.key,
            aws_secret_access_key=self.secret,
            region_name=self.region,
        )
        client.create_bucket(Bucket=name)
        client.close()

    @staticmethod
    def _opener() -> urllib.request.OpenerDirector:
        return urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: no proxy

    def _start(self) -> None:
        self.port = free_port()
        self._spawn(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            cwd=self._dir,
        )

        def ready() -> bool:
            try:
                with self._opener().open(f"{self.endpoint}/moto-api/", timeout=1) as response:
                    return response.status == 200
            except (OSError, urllib.error.URLError):
                return False

        self._wait_until(ready, "answering HTTP")
