"""Where blurred images go: the state layer's object store (``mlsd.state.ObjectStore``: a local
folder, ``s3://...`` on a cluster) keyed by random ids. Only blurred JPEGs (no metadata) are
written, plus a small JSON of who uploaded it and what was found; an original is written only
when the app's config asks for it."""

from __future__ import annotations

import json
import re
import secrets

from mlsd.state import ObjectStore

ID_RE = re.compile(r"[0-9a-f]{32}")


class BlurredStore:
    def __init__(self, uri: str | ObjectStore):
        self.objects = uri if isinstance(uri, ObjectStore) else ObjectStore(uri)  # must exist
        self.uri = self.objects.uri

    @staticmethod
    def new_id() -> str:
        return secrets.token_hex(16)

    @staticmethod
    def _key(image_id: str, suffix: str) -> str:
        if not ID_RE.fullmatch(image_id):
            raise KeyError(image_id)
        return f"{image_id[:2]}/{image_id}{suffix}"

    def put(self, image_id: str, jpeg: bytes, meta: dict, original: bytes | None = None) -> str:
        if original is not None:
            self.objects.put(self._key(image_id, ".original"), original)
        self.objects.put(self._key(image_id, ".json"), json.dumps(meta).encode())
        # last: the image exists only when complete
        return self.objects.put(self._key(image_id, ".jpg"), jpeg)

    def get(self, image_id: str) -> tuple[bytes, dict]:
        """(JPEG, metadata); KeyError when there is no such image."""
        data = self.objects.get(self._key(image_id, ".jpg"))
        meta = self.objects.get(self._key(image_id, ".json"))
        if data is None or meta is None:
            raise KeyError(image_id)
        return data, json.loads(meta)

    def check(self) -> None:
        self.objects.check()
