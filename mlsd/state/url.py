"""Where state lives, as a URL: ``sqlite:///var/...`` (or a bare path) on a laptop,
``postgresql+psycopg://user@host/db`` on a cluster. Parsed strictly: anything the layer cannot
open is an error that names it, never a file with a strange name.

The password of a Postgres store never travels in the URL (a serve config is not a secret): it
comes from ``$MLSD_STATE_PASSWORD``, the file named by ``$MLSD_STATE_PASSWORD_FILE`` (a mounted
Kubernetes Secret), or libpq's own ``PGPASSWORD`` / ``PGPASSFILE`` / ``~/.pgpass``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError


class StateError(RuntimeError):
    """A state store cannot be used; the message names the store and what to do."""


class StoreURLError(StateError, ValueError):
    """A store URL the layer cannot open (a typo must not become a local file)."""


class StoreMissing(StateError):
    """The store does not exist: ``python -m mlsd.state init URL`` creates it."""


class StoreUnavailable(StateError):
    """The store exists but cannot be reached or read right now."""


PASSWORD_ENV = "MLSD_STATE_PASSWORD"
PASSWORD_FILE_ENV = "MLSD_STATE_PASSWORD_FILE"
DRIVERS = {
    "sqlite": "sqlite",
    "sqlite+pysqlite": "sqlite",
    "postgresql": "postgresql+psycopg",
    "postgres": "postgresql+psycopg",
    "postgresql+psycopg": "postgresql+psycopg",
}
SCHEME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:")


@dataclass(frozen=True)
class StoreURL:
    """A parsed, checked store URL (SQLite paths made absolute)."""

    url: URL

    @property
    def kind(self) -> str:
        return "sqlite" if self.url.get_backend_name() == "sqlite" else "postgresql"

    @property
    def path(self) -> Path | None:
        return Path(self.url.database) if self.kind == "sqlite" else None

    @property
    def file_backed(self) -> bool:
        """On this node's disk: other nodes of a cluster cannot see it."""
        return self.kind == "sqlite"

    def __str__(self) -> str:
        """The canonical URL (never with a password: it cannot hold one)."""
        return self.url.render_as_string(hide_password=True)

    def with_password(self) -> URL:
        """The URL to connect with: the password from the environment, if one is set there."""
        if self.kind != "postgresql":
            return self.url
        password = os.environ.get(PASSWORD_ENV)
        file = os.environ.get(PASSWORD_FILE_ENV)
        if password is None and file:
            try:
                password = Path(file).read_text().strip()
            except OSError as e:
                raise StoreUnavailable(
                    f"state store {self}: cannot read ${PASSWORD_FILE_ENV} {file}: {e}"
                ) from None
        return self.url.set(password=password) if password else self.url


def parse_url(value: str | os.PathLike | StoreURL) -> StoreURL:
    """``value`` as a store URL; a bare path means SQLite; raises :class:`StoreURLError`."""
    if isinstance(value, StoreURL):
        return value
    raw = os.fspath(value).strip() if value is not None else ""
    if not raw:
        raise StoreURLError("a state store URL is empty")
    if "://" not in raw:
        if SCHEME_RE.match(raw):  # 'postgresql:/db', 'postgres:host/db': a URL with a typo
            raise StoreURLError(
                f"state store {raw!r} looks like a URL but is not one: write "
                "postgresql+psycopg://user@host:5432/db, sqlite:///path, or a plain file path"
            )
        return StoreURL(URL.create("sqlite", database=str(Path(raw).expanduser().resolve())))
    try:
        url = make_url(raw)
    except ArgumentError as e:
        msg = f"state store {raw!r} is not a URL the state layer reads: {e}"
        raise StoreURLError(msg) from None
    driver = DRIVERS.get(url.drivername)
    if driver is None:
        raise StoreURLError(
            f"state store {raw!r}: scheme {url.drivername!r} is not supported "
            "(sqlite:///path or postgresql+psycopg://user@host/db)"
        )
    url = url.set(drivername=driver)
    if url.password is not None:
        raise StoreURLError(
            f"state store {url.render_as_string(hide_password=True)}: the password must not be "
            f"in the URL (a serve config is not a secret): set ${PASSWORD_ENV}, "
            f"${PASSWORD_FILE_ENV} or libpq's PGPASSFILE"
        )
    if driver == "sqlite":
        if not url.database or url.database == ":memory:" or url.database.startswith("file:"):
            raise StoreURLError(f"state store {raw!r}: SQLite needs a file path (sqlite:///path)")
        url = url.set(database=str(Path(url.database).expanduser().resolve()), query={})
    elif not url.database:
        raise StoreURLError(f"state store {raw!r}: name the database (postgresql+psycopg://.../db)")
    return StoreURL(url)


def pin_url(value: str | None) -> str | None:
    """Build time: the canonical form of a store URL (absolute SQLite path: replicas may start
    in another working directory); None passes through."""
    return None if value is None else str(parse_url(value))
