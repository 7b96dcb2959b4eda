"""The state layer (mlsd.state) on its own: URLs, loud failures, commit order, object stores,
the access rule. Real SQLite and PostgreSQL (and an S3 API server) throughout."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from contextlib import contextmanager

import numpy as np
import pytest
from sqlalchemy import select

from mlsd.artifacts import ArtifactStore
from mlsd.state import (
    Caller,
    Database,
    ObjectStore,
    SchemaMismatch,
    StoreMissing,
    StoreUnavailable,
    StoreURLError,
    access,
    init_store,
    may_change,
    may_see,
    parse_url,
    pin_url,
)
from mlsd.state.schema import vs_images
from mlsd.state.url import PASSWORD_ENV, PASSWORD_FILE_ENV
from mlsd.visual_search.catalogue import CatalogueIndex, CatalogueLog
from tests.conftest import build_tiny_artifact, require_server
from tests.servers import MotoS3Server, PostgresServer

# -- URLs --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url, match",
    [
        ("postgresql:/db", "looks like a URL"),  # a typo: never a file named 'postgresql:'
        ("postgres:host/db", "looks like a URL"),
        ("mysql://u@h/db", "not supported"),
        ("postgresql+psycopg://u:hunter2@h/db", "password must not be in the URL"),
        ("sqlite://", "needs a file path"),
        ("sqlite:///:memory:", "needs a file path"),
        ("postgresql+psycopg://u@h", "name the database"),
        ("", "empty"),
    ],
)
def test_a_url_the_layer_cannot_open_is_an_error(url, match, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(StoreURLError, match=match) as e:
        parse_url(url)
    assert "hunter2" not in str(e.value)  # a password never reaches a log line
    assert os.listdir(tmp_path) == []


def test_bare_paths_are_sqlite_and_pinned_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert pin_url("var/x.sqlite") == f"sqlite:///{tmp_path}/var/x.sqlite"
    assert pin_url("sqlite:///var/x.sqlite") == f"sqlite:///{tmp_path}/var/x.sqlite"
    pg = parse_url("postgresql://mlsd@db.internal:5432/mlsd")
    assert str(pg) == "postgresql+psycopg://mlsd@db.internal:5432/mlsd" and not pg.file_backed


def test_the_password_comes_from_the_environment(tmp_path, monkeypatch):
    url = parse_url("postgresql+psycopg://mlsd@db/mlsd")
    monkeypatch.delenv(PASSWORD_ENV, raising=False)
    (tmp_path / "pw").write_text("s3cret\n")
    monkeypatch.setenv(PASSWORD_FILE_ENV, str(tmp_path / "pw"))  # a mounted Secret
    assert url.with_password().password == "s3cret"
    monkeypatch.setenv(PASSWORD_ENV, "other")
    assert url.with_password().password == "other"
    assert "s3cret" not in str(url) and "other" not in str(url)


# -- loud failures -----------------------------------------------------------------------------


def test_replicas_never_create_a_store(tmp_path):
    path = tmp_path / "new" / "live.sqlite"
    with pytest.raises(StoreMissing, match="python -m mlsd.state init"):
        CatalogueLog(str(path))
    assert not path.exists() and not path.parent.exists()
    init_store(path)
    init_store(path)  # idempotent: the same store, the same id keys
    assert CatalogueLog(str(path)).ids.key == CatalogueLog(str(path)).ids.key


def test_a_lost_or_replaced_file_fails_the_health_check(tmp_path):
    path = tmp_path / "live.sqlite"
    log = CatalogueLog(str(init_store(path)))
    log.check()
    os.rename(path, tmp_path / "moved.sqlite")
    with pytest.raises(StoreMissing, match=str(path)):
        log.check()
    init_store(path)  # an empty store in its place (a new volume): not the one we served
    with pytest.raises(StoreMissing, match="replaced"):
        log.check()


def test_a_store_of_another_schema_is_refused(tmp_path):

    path = tmp_path / "other.sqlite"
    sqlite3.connect(path).execute("CREATE TABLE t (x)").connection.close()
    with pytest.raises(SchemaMismatch, match="init"):
        Database(path)


def test_an_unreachable_postgres_is_named(postgres):
    url = postgres.create_database("reach")
    init_store(url)
    gone = url.replace(postgres.sockdir, postgres.sockdir + "-nowhere")
    with pytest.raises(StoreUnavailable, match="reach") as e:
        Database(gone)
    assert "nowhere" in str(e.value)  # which store, where


def test_a_postgres_restart_is_survived_without_serving_stale_state(tmp_path):
    """The pool drops dead connections (pre-ping); while the server is down the log says so
    (StoreUnavailable), and after it returns every acknowledged row is there."""

    require_server(PostgresServer.available(), "PostgreSQL")
    with PostgresServer() as pg:
        url = str(init_store(pg.create_database("restart")))
        log = CatalogueLog(url)
        acked = [log.append(np.ones(4), "m") for _ in range(3)]
        pg.pause()  # the server goes away (a failover, a restart); its data is kept
        with pytest.raises(StoreUnavailable):
            log.since(0)
        with pytest.raises(StoreUnavailable):
            log.check()
        pg.resume()
        assert [m.meta.image_id for _, m in log.since(0)] == acked
        log.check()


# -- commit order ------------------------------------------------------------------------------


@contextmanager
def held_commit(db: Database):
    """Make ``db``'s next write transaction pause just before its commit until released."""
    inside, release = threading.Event(), threading.Event()
    original = db.write

    @contextmanager
    def write(*logs):
        with original(*logs) as c:
            yield c
            inside.set()
            assert release.wait(30)

    db.write = write
    try:
        yield inside, release
    finally:
        db.write = original


def test_a_replica_never_skips_a_row_committed_late(tmp_path, state_url):
    """T1 appends and holds its transaction; T2 appends and commits; a replica syncs; T1
    commits; the replica must have both. (On Postgres identity values are drawn at insert,
    not commit: without per-log ordering the replica moves past T1's row for good.)"""
    root = tmp_path / "store"
    build_tiny_artifact(root, n=40)
    art = ArtifactStore(root).load("visual_search")
    replica = CatalogueIndex(art, state_url)
    t1, t2 = CatalogueLog(state_url), CatalogueLog(state_url)  # two writers: own connections
    version = f"{replica.version}:torch"
    emb = np.ones(32, np.float32)
    got: dict[str, int] = {}
    with held_commit(t1.db) as (inside, release):
        w1 = threading.Thread(target=lambda: got.update(a=t1.append(emb, version)))
        w1.start()
        assert inside.wait(30)  # T1 has its row and holds the transaction
        w2 = threading.Thread(target=lambda: got.update(b=t2.append(emb * 2, version)))
        w2.start()
        w2.join(2.0)  # T2 commits now (naive) or waits for T1 (ordered)
        replica.sync()
        release.set()
        w1.join(30)
        w2.join(30)
    replica.sync()
    assert {got["a"], got["b"]} <= set(replica.meta), "a committed row was skipped for good"


# -- object stores -----------------------------------------------------------------------------


def test_object_store_keys_and_atomic_writes(tmp_path):
    with pytest.raises(StoreMissing, match="init"):
        ObjectStore(tmp_path / "none")
    store = ObjectStore(tmp_path / "objs", create=True)
    key = store.put(ObjectStore.new_key("visual_search/images"), b"abc")
    assert store.get(key) == b"abc" and store.get("visual_search/images/" + "0" * 32) is None
    for bad in ("../etc/passwd", "a/../../x", "/abs/" + "0" * 32, "visual_search/x"):
        with pytest.raises(ValueError):
            store.get(bad)
    assert store.delete(key) and not store.delete(key) and store.get(key) is None
    assert not [f for _, _, fs in os.walk(tmp_path / "objs") for f in fs if f.endswith(".tmp")]
    assert store.file_backed


@pytest.fixture(scope="module")
def s3():
    """A real S3 API server (moto's server mode) on loopback; the client is the real s3fs."""

    require_server(MotoS3Server.available(), "moto[server]")
    with MotoS3Server() as server:
        saved = {k: os.environ.get(k) for k in server.env()}
        os.environ.update(server.env())
        server.create_bucket("mlsd-state")
        yield server
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def test_an_s3_object_store_keeps_uploads_and_deletes_them(s3, state_url):
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
    with pytest.raises(StoreMissing, match="s3://no-such-bucket"):
        ObjectStore("s3://no-such-bucket/x")
    objects = ObjectStore("s3://mlsd-state/visual_search", create=True)
    assert not objects.file_backed
    log = CatalogueLog(state_url, objects)
    image_id = log.append(np.ones(4), "m", owner="alice", image=b"\x89PNG...")
    other = CatalogueLog(state_url, "s3://mlsd-state/visual_search")  # another replica
    assert other.image_bytes(image_id) == b"\x89PNG..."
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    assert len(fs.find("mlsd-state/visual_search")) == 1
    assert other.delete(image_id, "alice")
    fs.invalidate_cache()
    assert fs.find("mlsd-state/visual_search") == [] and log.image_bytes(image_id) is None


# -- the access rule ---------------------------------------------------------------------------


def test_one_access_rule():
    alice, bob, admin, anyone = Caller("alice"), Caller("bob"), Caller("ops", True), Caller(None)
    assert may_see(bob, "alice") and not may_change(bob, "alice")
    assert not may_see(bob, "alice", private=True) and may_see(alice, "alice", private=True)
    assert not may_see(anyone, "alice", hidden=True) and may_see(admin, "alice", hidden=True)
    assert not may_change(alice, None) and may_change(admin, None)  # unowned: admins only
    assert access(bob, "alice", private=True) == "not_found"  # 404: existence not revealed
    assert access(bob, "alice") == "forbidden"  # 403
    assert access(alice, "alice", private=True) == access(admin, "x", hidden=True) == "ok"
    assert Caller.of("ops", {"search", "admin"}).admin and not Caller.of("a", {"search"}).admin


def test_time_is_the_apps_clock(state_url):
    """Rows carry the app's Unix seconds (not a dialect's default)."""
    before = time.time()
    log = CatalogueLog(state_url)
    log.append(np.ones(4), "m")

    with log.db.read() as c:
        created = c.execute(select(vs_images.c.created)).scalar_one()
    assert before <= created <= time.time()


def test_threads_that_end_give_their_connections_back(tmp_path):
    """SQLite keeps a connection per thread; a server that runs each request on a fresh
    thread (Starlette's test client, a recycling pool) must not exhaust the pool (15)."""
    db = Database(init_store(tmp_path / "s.db"))
    errors = []

    def read():
        try:
            with db.read() as c:
                c.exec_driver_sql("select 1").all()
        except Exception as e:  # noqa: BLE001 - the failure is what the test reports
            errors.append(e)

    stuck = 0
    for _ in range(40):  # one after another: each thread ends before the next begins
        t = threading.Thread(target=read, daemon=True)
        t.start()
        t.join(timeout=5)  # a read takes milliseconds; one waiting on an exhausted pool hangs
        if t.is_alive():
            stuck += 1
            break
    assert stuck == 0 and errors == []
    db.close()
