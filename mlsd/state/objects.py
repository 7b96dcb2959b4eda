"""Bytes out of the database: uploaded images, video thumbnails and blurred outputs in an object
store through fsspec (a local folder on a laptop, ``s3://bucket/prefix`` on a cluster). Rows
keep the keys; deleting an item deletes its bytes.

Order of writes: the bytes first, then the row that names them, so a committed row never points
at nothing (a crash in between leaves an unreferenced object, never a dangling row). Deletes go
the other way: the row's key is cleared and committed, then the object is removed.

Credentials for S3 come from the environment (``AWS_*``, an instance role, IRSA), never from the
serve config; ``AWS_ENDPOINT_URL_S3`` points at an S3-compatible server (MinIO, moto).
"""

from __future__ import annotations

import logging
import os
import re
import secrets

import fsspec

from mlsd.state.url import StoreMissing, StoreUnavailable, StoreURLError

log = logging.getLogger(__name__)
KEY_RE = re.compile(r"[a-z0-9_]+(/[a-z0-9_]+)*/[0-9a-f]{32}(\.[a-z]{1,8})?")
LOCAL = ("file", "local")


class ObjectStore:
    """A folder or bucket prefix of immutable objects under random keys."""

    def __init__(self, uri: str | os.PathLike, create: bool = False):
        raw = os.fspath(uri).strip()
        if not raw:
            raise StoreURLError("an object store URI is empty")
        try:
            self.fs, root = fsspec.core.url_to_fs(raw)
        except (ValueError, ImportError) as e:
            raise StoreURLError(f"object store {raw!r} cannot be opened: {e}") from None
        self.local = is_local_uri(raw)
        self.root = os.path.abspath(root) if self.local else root.rstrip("/")
        self.uri = self.root if self.local else f"{_scheme(self.fs)}://{self.root}"
        if create:
            self.create()
        self.check()

    @property
    def file_backed(self) -> bool:
        """On this node's disk: other nodes of a cluster cannot see it."""
        return self.local

    def create(self) -> None:
        """``init``: the folder (0700). A bucket is made by its owner (its policy, lifecycle
        and encryption are theirs to set); ``check`` then says whether it is there."""
        if self.local:
            os.makedirs(self.root, mode=0o700, exist_ok=True)

    def check(self) -> None:
        """Raise (naming the store) unless it exists and answers: a replica's health check."""
        try:
            exists = self.fs.exists(self.root) if self.local else self._bucket_exists()
        except Exception as e:  # network, credentials: every backend raises its own
            raise StoreUnavailable(f"object store {self.uri} cannot be reached: {e}") from None
        if not exists:
            raise StoreMissing(
                f"object store {self.uri} does not exist: create it with "
                f"`python -m mlsd.state init --objects {self.uri}`"
            )

    def _bucket_exists(self) -> bool:
        bucket = self.root.split("/", 1)[0]
        self.fs.invalidate_cache(bucket)
        return bool(self.fs.exists(bucket))

    @staticmethod
    def new_key(prefix: str, suffix: str = "") -> str:
        """A fresh random key under ``prefix`` (not guessable, never reused)."""
        return f"{prefix}/{secrets.token_hex(16)}{suffix}"

    def _path(self, key: str) -> str:
        if not KEY_RE.fullmatch(key):
            raise ValueError(f"not an object key: {key!r}")
        return f"{self.root}/{key}"

    def put(self, key: str, data: bytes) -> str:
        """Write an object (whole or not at all: a local file is renamed into place)."""
        path = self._path(key)
        try:
            if self.local:
                os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
                tmp = f"{path}.{secrets.token_hex(4)}.tmp"
                with open(tmp, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, path)
            else:
                self.fs.pipe_file(path, data)
        except OSError as e:
            raise StoreUnavailable(f"object store {self.uri}: cannot write {key}: {e}") from None
        return key

    def get(self, key: str | None) -> bytes | None:
        """The object's bytes; None when there is no such object."""
        if not key:
            return None
        try:
            return self.fs.cat_file(self._path(key))
        except FileNotFoundError:
            return None
        except OSError as e:
            raise StoreUnavailable(f"object store {self.uri}: cannot read {key}: {e}") from None

    def delete(self, key: str | None) -> bool:
        """Remove an object; False if it was not there. A failure is logged, not raised: the
        committed row no longer names the key, so the bytes are unreachable by any route."""
        if not key:
            return False
        try:
            self.fs.rm_file(self._path(key))
            return True
        except FileNotFoundError:
            return False
        except OSError as e:
            log.error("object store %s: could not delete %s: %s", self.uri, key, e)
            return False


def is_local_uri(uri: str) -> bool:
    """A folder on this node's disk (a path or ``file://``), without opening anything."""
    protocol, _ = fsspec.core.split_protocol(os.fspath(uri))
    return protocol in (None, *LOCAL)


def _scheme(fs) -> str:
    protocol = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    return protocol[0]
