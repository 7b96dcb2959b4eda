"""One state store, embedded or shared: SQLAlchemy Core over SQLite (WAL, ``synchronous=FULL``:
a committed row survives a crash; every process on this host reads it) or Postgres (every node
of a cluster reads it).

Only :func:`init_store` creates or migrates a store. Serving replicas and jobs open an existing
one (:class:`Database`) and fail, naming it, when it is missing, unreachable or of another
schema version: a replica on a fresh node must never start empty and serve a partial catalogue.

**Commit order.** Every replica keeps its caches (faiss, tantivy, candidates) by reading a log
"after the last row I saw". On Postgres an identity value is taken when a row is inserted, not
when it commits: T1 takes seq 10, T2 takes 11 and commits, a reader sees 11 and moves past it,
then T1 commits 10, which that reader never reads. :meth:`Database.write` therefore serialises
appends per log (a transaction-scoped advisory lock, taken before the insert draws its seq and
released after the commit is visible), so seq order is commit order. SQLite has one writer at a
time (``BEGIN IMMEDIATE``), which gives the same order.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection, Engine, create_engine, event, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, SQLAlchemyError

from mlsd.state import schema
from mlsd.state.ids import IdPermutation
from mlsd.state.legacy import copy_legacy, legacy_tables, set_aside
from mlsd.state.objects import ObjectStore
from mlsd.state.url import StateError, StoreMissing, StoreUnavailable, StoreURL, parse_url

log = logging.getLogger(__name__)


class SchemaMismatch(StateError):
    """The store was made by another version of this code: ``init`` migrates it."""


LOCK = text("SELECT pg_advisory_xact_lock(:k)")


def lock_key(log_name: str) -> int:
    """A stable signed 64-bit advisory-lock key per log table."""
    digest = hashlib.sha256(f"mlsd.state:{log_name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _engine(store: StoreURL, create: bool) -> Engine:
    if store.kind == "sqlite":
        path = store.path
        if not create and not path.exists():
            raise StoreMissing(
                f"state store {store} does not exist (a new node, or a lost disk?): create it "
                f"with `python -m mlsd.state init {store}`; replicas never create a store"
            )
        if create:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # mode=rw: opening never creates the file (only init does)
        mode = "rwc" if create else "rw"
        engine = create_engine(
            f"sqlite+pysqlite:///file:{path}?mode={mode}&uri=true",
            connect_args={"timeout": 30, "check_same_thread": False},
        )

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record):
            dbapi_conn.isolation_level = None  # SQLAlchemy emits BEGIN itself (below)
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        @event.listens_for(engine, "begin")
        def _begin(conn):
            driver = conn.connection.driver_connection
            if not driver.in_transaction:  # Database.read / write began it already
                driver.execute("BEGIN")

        return engine
    return create_engine(
        store.with_password(),
        pool_pre_ping=True,  # a dropped connection (failover, restart) is replaced, not served
        # connections per replica process: replicas x this must fit the server's
        # max_connections (README "On a cluster")
        pool_size=int(os.environ.get("MLSD_STATE_POOL_SIZE", "5")),
        connect_args={"connect_timeout": 10, "application_name": "mlsd"},
    )


class Database:
    """An existing state store; every log, queue and key store reads and writes through one.

    ``create=True`` is for :func:`init_store` only."""

    def __init__(self, url: str | os.PathLike | StoreURL, create: bool = False):
        self.url = parse_url(url)
        self.engine = _engine(self.url, create)
        self._inode = None
        self._ids: dict[str, IdPermutation] = {}
        self._lock = threading.Lock()
        self._watch = None  # SQLite: a connection that only ever reads PRAGMA data_version
        self._local = threading.local()  # SQLite: each thread's own connection
        self._kept: list[tuple[threading.Thread, Connection]] = []  # SQLite: per thread
        self._compiled: dict[tuple, tuple] = {}
        self._autocommit = self.engine.execution_options(isolation_level="AUTOCOMMIT")
        if not create:
            self._inode = self._stat()
            self.check()

    @property
    def is_sqlite(self) -> bool:
        return self.url.kind == "sqlite"

    def _stat(self) -> tuple[int, int] | None:
        if not self.is_sqlite:
            return None
        st = os.stat(self.url.path)
        return st.st_dev, st.st_ino

    def unavailable(self, e: Exception) -> StoreUnavailable:
        msg = str(e.orig if isinstance(e, DBAPIError) and e.orig is not None else e)
        return StoreUnavailable(f"state store {self.url} cannot be used: {msg.strip()}")

    @contextmanager
    def _connection(self, write: bool) -> Iterator[Connection]:
        """Postgres: a pooled connection (a replica's threads share a few). SQLite: the
        thread's own, kept open (a file handle: checking one out per call would cost more
        than the statement, and its page cache stays warm across its reads and writes)."""
        if not self.is_sqlite:
            # reads in autocommit: under READ COMMITTED each statement has its own snapshot
            # anyway, and BEGIN / COMMIT would double a read's round trips
            engine = self.engine if write else self._autocommit
            with engine.connect() as conn:
                yield conn
            return
        conn = getattr(self._local, "conn", None)
        if conn is None or conn.closed or conn.invalidated:
            self._release_dead_threads()
            conn = self._local.conn = self.engine.connect()
            with self._lock:
                self._kept.append((threading.current_thread(), conn))
        yield conn

    def _release_dead_threads(self) -> None:
        """Give back the connections of threads that have ended (a server that runs each
        request on a fresh thread would otherwise hold one per thread it ever ran, until the
        pool is exhausted)."""
        with self._lock:
            dead = [c for t, c in self._kept if not t.is_alive()]
            self._kept = [(t, c) for t, c in self._kept if t.is_alive()]
        for c in dead:
            c.close()

    @contextmanager
    def _sqlite_transaction(self, conn: Connection, begin: str) -> Iterator[Connection]:
        """SQLite: BEGIN / COMMIT on the driver connection (SQLAlchemy's transaction objects
        and events cost more than a short transaction here); a statement that goes through
        SQLAlchemy joins it (its ``begin`` hook sees the driver in a transaction)."""
        driver = conn.connection.driver_connection
        driver.execute(begin)
        try:
            yield conn
        except BaseException:
            conn.rollback() if conn.in_transaction() else driver.rollback()
            raise
        conn.commit() if conn.in_transaction() else driver.commit()

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A connection for reads, each statement on its own snapshot (no BEGIN / COMMIT
        round trips: the logs' readers never need two statements to agree, e.g. a deletion
        erases its row in its tombstone's transaction, so tombstones then rows is safe)."""
        try:
            with self._connection(False) as conn:
                try:
                    yield conn
                finally:
                    if conn.in_transaction():  # one a SQLAlchemy statement began
                        conn.commit()
        except (OperationalError, InterfaceError) as e:
            raise self.unavailable(e) from e

    @contextmanager
    def write(self, *logs: str) -> Iterator[Connection]:
        """A write transaction that may append to ``logs``: appends to one log are serialised,
        so a reader that has seen seq N has seen every row below N that will ever commit.
        SQLite takes its write lock up front (``BEGIN IMMEDIATE``): a read-then-write (a
        quota, an upsert) never has to upgrade, and writers commit in the order they began."""
        try:
            if self.is_sqlite:
                with (
                    self._connection(True) as conn,
                    self._sqlite_transaction(conn, "BEGIN IMMEDIATE"),
                ):
                    yield conn
            else:
                with self._connection(True) as conn, conn.begin():
                    for name in sorted(set(logs)):  # one order: no deadlock between logs
                        conn.execute(LOCK, {"k": lock_key(name)})
                    yield conn
        except (OperationalError, InterfaceError) as e:
            raise self.unavailable(e) from e

    def version(self) -> int | None:
        """A number that changes whenever another connection (any process on this host)
        commits to the store; None when the backend has no such cheap signal (Postgres). A
        replica that saw version V and sees V again knows no row arrived, without a query:
        replaying "after the last row I saw" before every search then costs microseconds."""
        if not self.is_sqlite:
            return None
        with self._lock:
            if self._watch is None:  # never writes, so it sees every commit as another's
                self._watch_checkout = self.engine.raw_connection()  # held: never pooled
                self._watch = self._watch_checkout.driver_connection
            try:
                return int(self._watch.execute("PRAGMA data_version").fetchone()[0])
            except Exception as e:  # the file is gone or unreadable: say so, don't guess
                raise self.unavailable(e) from e

    # -- the hot statements: a replica runs these per request or per search -----------------
    def _sqlite(self, conn: Connection, stmt, params: dict | None, columns: tuple = ()):
        """SQLite: run ``stmt`` as SQLAlchemy compiled it (once per statement object and set
        of inserted ``columns``) on the driver connection, inside ``conn``'s transaction:
        SQLAlchemy's per-call execution machinery costs more than an indexed SQLite lookup or
        an append (bench.state_layer). The SQL is still Core's, for this dialect; the values
        need no conversion for sqlite3."""
        key = (id(stmt), columns)
        entry = self._compiled.get(key)
        if entry is None:
            kw = {"column_keys": list(columns)} if columns else {}
            compiled = stmt.compile(dialect=self.engine.dialect, **kw)
            order = tuple(compiled.positiontup or ())
            fixed = {k: compiled.binds[k].value for k in order if k in compiled.binds}
            entry = (stmt, compiled.string, order, fixed)  # the statement kept alive (its id)
            self._compiled[key] = entry
        _, sql, order, fixed = entry
        params = params or {}
        values = [params[k] if k in params else fixed[k] for k in order]
        return conn.connection.driver_connection.execute(sql, values)

    def rows(self, conn: Connection, stmt, params: dict | None = None) -> list[tuple]:
        """The rows of a module-level SELECT (parameters by ``bindparam`` name)."""
        if self.is_sqlite:
            return self._sqlite(conn, stmt, params).fetchall()
        return [tuple(r) for r in conn.execute(stmt, params or {})]

    def insert(self, conn: Connection, stmt, row: dict) -> int:
        """Insert one row with a module-level INSERT; -> its seq (identity key)."""
        if self.is_sqlite:
            return int(self._sqlite(conn, stmt, row, tuple(row)).lastrowid)
        return int(conn.execute(stmt, row).inserted_primary_key[0])

    def run(self, conn: Connection, stmt, params: dict | None = None) -> int:
        """A module-level UPDATE / DELETE; -> the rows it changed."""
        if self.is_sqlite:
            return self._sqlite(conn, stmt, params).rowcount
        return conn.execute(stmt, params or {}).rowcount

    def insert_ignore(self, table):
        """INSERT ... ON CONFLICT DO NOTHING in this store's dialect."""
        return (sqlite if self.is_sqlite else postgresql).insert(table).on_conflict_do_nothing()

    def ids(self, log_name: str) -> IdPermutation:
        """The permutation from ``log_name``'s seq to public ids (its key, made by init)."""
        with self._lock:
            perm = self._ids.get(log_name)
        if perm is None:
            with self.read() as c:
                key = c.execute(
                    select(schema.meta.c.v).where(schema.meta.c.k == f"id_key:{log_name}")
                ).scalar_one_or_none()
            if key is None:
                raise SchemaMismatch(
                    f"state store {self.url} has no id key for {log_name}: "
                    f"run `python -m mlsd.state init {self.url}`"
                )
            perm = IdPermutation(bytes(key))
            with self._lock:
                self._ids[log_name] = perm
        return perm

    def check(self) -> None:
        """Raise (naming the store) unless it is there, readable and of this schema: what a
        serving replica's health check asks before it takes traffic."""
        if self.is_sqlite:
            try:
                now = self._stat()
            except FileNotFoundError:
                raise StoreMissing(f"state store {self.url} is gone (a lost volume?)") from None
            if self._inode is not None and now != self._inode:
                raise StoreMissing(f"state store {self.url} was replaced by another file")
        try:
            with self.engine.connect() as c:
                version = c.execute(
                    select(schema.meta.c.v).where(schema.meta.c.k == "schema_version")
                ).scalar_one_or_none()
        except SQLAlchemyError as e:
            if "no such table" in str(e) or "does not exist" in str(e):
                raise SchemaMismatch(
                    f"state store {self.url} has no mlsd tables: create them with "
                    f"`python -m mlsd.state init {self.url}`"
                ) from None
            raise self.unavailable(e) from e
        if version is None or int(bytes(version).decode()) != schema.SCHEMA_VERSION:
            found = "none" if version is None else bytes(version).decode()
            raise SchemaMismatch(
                f"state store {self.url} has schema version {found}, this code "
                f"{schema.SCHEMA_VERSION}: run `python -m mlsd.state init {self.url}`"
            )

    def close(self) -> None:
        with self._lock:
            kept, self._kept = self._kept, []
            if self._watch is not None:
                self._watch_checkout.close()
                self._watch = self._watch_checkout = None
        for _, conn in kept:
            conn.close()
        self._local = threading.local()
        self.engine.dispose()


def init_store(
    url: str | os.PathLike | StoreURL, objects: ObjectStore | str | None = None
) -> StoreURL:
    """Create the store (and its folder) or migrate it to this schema; idempotent. The one
    place a store is ever created: ``python -m mlsd.state init URL``. A file written by the
    SQLite-only logs before the state layer is carried over (``mlsd.state.legacy``; its
    uploaded bytes to ``objects``)."""
    store = parse_url(url)
    old = None
    if store.kind == "sqlite" and legacy_tables(store.path):
        old = set_aside(store.path)
    db = Database(store, create=True)
    try:
        with db.write() as c:
            schema.metadata.create_all(c)
            version = c.execute(
                select(schema.meta.c.v).where(schema.meta.c.k == "schema_version")
            ).scalar_one_or_none()
            if version is not None and int(bytes(version).decode()) > schema.SCHEMA_VERSION:
                raise SchemaMismatch(f"state store {store} is newer than this code")
            rows = [{"k": "schema_version", "v": str(schema.SCHEMA_VERSION).encode()}]
            rows += [{"k": f"id_key:{n}", "v": secrets.token_bytes(32)} for n in schema.ID_LOGS]
            c.execute(db.insert_ignore(schema.meta), rows)
            counts = [{"k": k, "n": 0} for k in ("events", "unknown_user", "unknown_video")]
            c.execute(db.insert_ignore(schema.rec_counts), counts)
    except (OperationalError, InterfaceError) as e:
        raise db.unavailable(e) from e
    finally:
        db.close()
    if store.kind == "sqlite":
        os.chmod(store.path, 0o600)  # API key digests, users' events: this user's only
    if old is not None:
        db = Database(store)
        try:
            copy_legacy(old, db, ObjectStore(objects) if isinstance(objects, str) else objects)
        finally:
            db.close()
    return store
