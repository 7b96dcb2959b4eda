"""Where blurred images go: an object store (fsspec: a local folder, ``s3://...``) keyed by
random ids. Only blurred JPEGs (no metadata) are written, plus a small JSON of who uploaded it
and what was found; an original is written only when the app's config asks for it."""

from __future__ import annotations

import json
import os
import re
import secrets

import fsspec

ID_RE = re.compile(r"[0-9a-f]{32}")


class BlurredStore:
    def __init__(self, uri: str):
        self.uri = uri.rstrip("/")
        self.fs, self.root = fsspec.core.url_to_fs(self.uri)
        if getattr(self.fs, "protocol", None) in ("file", ("file", "local")):
            os.makedirs(self.root, mode=0o700, exist_ok=True)

    @staticmethod
    def new_id() -> str:
        return secrets.token_hex(16)

    def _path(self, image_id: str, suffix: str) -> str:
        if not ID_RE.fullmatch(image_id):
            raise KeyError(image_id)
        return f"{self.root}/{image_id[:2]}/{image_id}{suffix}"

    def put(self, image_id: str, jpeg: bytes, meta: dict, original: bytes | None = None) -> str:
        path = self._path(image_id, ".jpg")
        self.fs.makedirs(os.path.dirname(path), exist_ok=True)
        if original is not None:
            with self.fs.open(self._path(image_id, ".original"), "wb") as f:
                f.write(original)
        with self.fs.open(self._path(image_id, ".json"), "w") as f:
            json.dump(meta, f)
        with self.fs.open(path, "wb") as f:  # last: the image exists only when complete
            f.write(jpeg)
        return path

    def get(self, image_id: str) -> tuple[bytes, dict]:
        """(JPEG, metadata); KeyError when there is no such image."""
        try:
            with self.fs.open(self._path(image_id, ".jpg"), "rb") as f:
                data = f.read()
            with self.fs.open(self._path(image_id, ".json"), "r") as f:
                meta = json.load(f)
        except FileNotFoundError:
            raise KeyError(image_id) from None
        return data, meta
