"""The throwaway servers in tests/servers.py start, serve, and stop by the PID they started.

A missing binary skips its test, unless MLSD_REQUIRE_SERVERS is set (not "" or "0"): then it
fails, so CI that installs the servers cannot silently skip them.
"""

from __future__ import annotations

import os
import socket

import fsspec
import pytest
import sqlalchemy as sa

from tests.servers import MotoS3Server, PostgresServer, RedisServer, free_port


def _require(available: bool, what: str) -> None:
    if available:
        return
    if os.environ.get("MLSD_REQUIRE_SERVERS", "") not in ("", "0"):
        pytest.fail(f"{what} not found and MLSD_REQUIRE_SERVERS is set")
    pytest.skip(f"{what} not found (set MLSD_REQUIRE_SERVERS=1 to make this a failure)")


def _gone(pid: int | None) -> bool:
    assert pid is not None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_free_port_is_bindable():
    port = free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


def test_postgres_create_database_and_query():
    _require(PostgresServer.available(), "PostgreSQL server binaries (initdb, postgres)")

    pg = PostgresServer()
    pg.stop()  # before start(): a no-op
    with pg.start():
        if os.geteuid() == 0:  # the PID we hold is the postmaster itself, not root
            assert os.stat(f"/proc/{pg.pid}").st_uid != 0
        url = pg.create_database("servers_test")
        assert url == pg.url("servers_test")
        engine = sa.create_engine(url)
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE TABLE t (id int PRIMARY KEY, name text)"))
            conn.execute(sa.text("INSERT INTO t VALUES (1, 'a'), (2, 'b')"))
        with engine.connect() as conn:  # the pool keeps this connection open past stop()
            names = conn.execute(sa.text("SELECT name FROM t ORDER BY id")).scalars().all()
        assert names == ["a", "b"]
    pg.stop()  # idempotent
    engine.dispose()
    assert _gone(pg.pid)


def test_redis_ping():
    _require(RedisServer.available(), "redis-server (apt-get install redis-server)")
    with RedisServer() as redis:
        host, port = redis.address.rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=5) as s:
            s.sendall(b"*1\r\n$4\r\nPING\r\n")
            assert s.recv(64) == b"+PONG\r\n"
    redis.stop()
    assert _gone(redis.pid)


def test_moto_s3_through_env(monkeypatch):
    _require(MotoS3Server.available(), "moto server (pip install 'moto[server]')")

    with MotoS3Server() as s3:
        s3.create_bucket("mlsd-test")
        for key, value in s3.env().items():
            monkeypatch.setenv(key, value)
        # fsspec caches instances by arguments, not environment: skip the cache so an instance
        # made by an earlier test (another endpoint) is not reused.
        fs = fsspec.filesystem("s3", skip_instance_cache=True)
        fs.pipe("s3://mlsd-test/dir/obj.bin", b"payload")
        assert fs.cat("s3://mlsd-test/dir/obj.bin") == b"payload"
        fs.rm("s3://mlsd-test/dir/obj.bin")
        fs.invalidate_cache()
        assert not fs.exists("s3://mlsd-test/dir/obj.bin")
        # the explicit alternative, without environment variables
        other = fsspec.filesystem("s3", skip_instance_cache=True, **s3.storage_options())
        assert other.ls("mlsd-test") == []
    assert _gone(s3.pid)
