"""The image catalogue: the indexed set (from an artifact) plus a durable log of live additions.

The book's indexing pipeline adds new images to the index while the system serves. Here each
addition is committed to an append-only SQLite log (WAL, synchronous=FULL) *before* it is
acknowledged, and every index replica replays the log on start and before each search, so an
acknowledged image is never lost and every replica sees it. The next indexing job folds the
log into a new artifact version.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mlsd.durable import DurableLog
from mlsd.rerank import ImageMeta

LIVE_ID_BASE = 1_000_000_000_000  # ids of live additions; artifact catalogue ids stay below


@dataclass
class LiveImage:
    meta: ImageMeta
    embedding: np.ndarray  # (D,) float32
    model_version: str


class CatalogueLog(DurableLog):
    """Append-only, multi-process-safe log of images added at serving time."""

    def __init__(self, path: str | Path):
        super().__init__(
            path,
            """CREATE TABLE IF NOT EXISTS images (
                 seq INTEGER PRIMARY KEY AUTOINCREMENT,
                 owner TEXT, private INTEGER NOT NULL, unsafe INTEGER NOT NULL,
                 signature TEXT, embedding BLOB NOT NULL, dim INTEGER NOT NULL,
                 model_version TEXT NOT NULL, image BLOB, created REAL DEFAULT (unixepoch('subsec'))
               )""",
        )

    def append(
        self,
        embedding: np.ndarray,
        model_version: str,
        owner: str | None = None,
        private: bool = False,
        unsafe: bool = False,
        signature: str | None = None,
        image: bytes | None = None,
    ) -> int:
        """Durably record one image; returns its image id once committed."""
        emb = np.ascontiguousarray(embedding, dtype=np.float32).ravel()
        with self._lock:
            cur = self._conn.execute(
                "INSERT INTO images (owner, private, unsafe, signature, embedding, dim,"
                " model_version, image) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    owner,
                    int(private),
                    int(unsafe),
                    signature,
                    emb.tobytes(),
                    emb.size,
                    model_version,
                    image,
                ),
            )
            self._conn.commit()
            return LIVE_ID_BASE + int(cur.lastrowid)

    def since(self, seq: int) -> list[tuple[int, LiveImage]]:
        """Records after sequence number ``seq``, as (seq, image) in order."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT seq, owner, private, unsafe, signature, embedding, model_version"
                " FROM images WHERE seq > ? ORDER BY seq",
                (seq,),
            ).fetchall()
        out = []
        for s, owner, private, unsafe, sig, emb, version in rows:
            meta = ImageMeta(LIVE_ID_BASE + s, owner, bool(private), bool(unsafe), sig)
            out.append((s, LiveImage(meta, np.frombuffer(emb, dtype=np.float32), version)))
        return out

    def image_bytes(self, image_id: int) -> bytes | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT image FROM images WHERE seq = ?", (image_id - LIVE_ID_BASE,)
            ).fetchone()
        return None if row is None else row[0]

    def __len__(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM images").fetchone()[0])
