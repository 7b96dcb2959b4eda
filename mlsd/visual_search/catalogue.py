"""The image catalogue: the indexed set (from an artifact) plus a durable log of live additions.

The book's indexing pipeline adds new images to the index while the system serves. Here each
addition is committed to an append-only SQLite log (WAL, synchronous=FULL) *before* it is
acknowledged, and every index replica replays the log on start and before each search, so an
acknowledged image is never lost and every replica sees it. The next indexing job folds the
log into a new artifact version.

A deletion is a tombstone in the same log (table ``deletions``), committed in one transaction
with the erasure of the live image's bytes and embedding. Replicas read the tombstones before
the additions on every sync, so a deleted image is never indexed again, by any replica, after a
restart or in the next artifact (the indexing job leaves tombstoned ids out).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mlsd.artifacts import Artifact, ArtifactError, label_version
from mlsd.durable import LIVE_ID_BASE, DurableLog
from mlsd.index import VectorIndex
from mlsd.visual_search.rerank import ImageMeta, RerankConfig, rerank


@dataclass
class SearchHit:
    image_id: int
    score: float


@dataclass
class LiveImage:
    meta: ImageMeta
    embedding: np.ndarray  # (D,) float32
    model_version: str


class QuotaExceeded(ValueError):
    """An owner already has as many live images as the catalogue allows one owner."""


class CatalogueLog(DurableLog):
    """Append-only, multi-process-safe log of images added at serving time.

    Bounded: at most ``max_per_owner`` images per owner, and the uploaded bytes are kept
    ``retention_s`` seconds (the embedding, and so search, stays; the next indexing job has
    folded the image in by then).
    """

    def __init__(
        self,
        path: str | Path,
        max_per_owner: int | None = None,
        retention_s: float | None = None,
    ):
        super().__init__(
            path,
            """CREATE TABLE IF NOT EXISTS images (
                 seq INTEGER PRIMARY KEY AUTOINCREMENT,
                 owner TEXT, private INTEGER NOT NULL, unsafe INTEGER NOT NULL,
                 signature TEXT, embedding BLOB NOT NULL, dim INTEGER NOT NULL,
                 model_version TEXT NOT NULL, image BLOB,
                 created REAL DEFAULT ((julianday('now') - 2440587.5) * 86400.0)
               )""",
            "CREATE INDEX IF NOT EXISTS images_owner ON images (owner)",
            "CREATE INDEX IF NOT EXISTS images_created ON images (created)",
            """CREATE TABLE IF NOT EXISTS deletions (
                 seq INTEGER PRIMARY KEY AUTOINCREMENT, image_id INTEGER NOT NULL UNIQUE,
                 deleted_by TEXT,
                 created REAL DEFAULT ((julianday('now') - 2440587.5) * 86400.0)
               )""",
        )
        self.max_per_owner, self.retention_s = max_per_owner, retention_s
        self._pruned = 0.0

    def prune(self, now: float | None = None) -> int:
        """Drop uploaded bytes older than the retention (an indexed range, not a scan)."""
        if self.retention_s is None:
            return 0
        import time

        now = time.time() if now is None else now
        with self._lock:
            cur = self._conn.execute(
                "UPDATE images SET image = NULL WHERE created < ? AND image IS NOT NULL",
                (now - self.retention_s,),
            )
            self._conn.commit()
            self._pruned = now
        return cur.rowcount

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
        import time

        emb = np.ascontiguousarray(embedding, dtype=np.float32).ravel()
        if self.retention_s is not None and time.time() - self._pruned > 60:
            self.prune()
        with self._lock:
            if self.max_per_owner is not None and owner is not None:
                (n,) = self._conn.execute(
                    "SELECT COUNT(*) FROM images WHERE owner = ?", (owner,)
                ).fetchone()
                if n >= self.max_per_owner:
                    raise QuotaExceeded(f"{owner} has {n} images, the most one owner may add")
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
            return self.live_id(int(cur.lastrowid))

    def since(self, seq: int) -> list[tuple[int, LiveImage]]:
        """Records after sequence number ``seq``, as (seq, image) in order."""
        with self._lock:
            rows = self._conn.execute(  # dim 0: erased by a deletion
                "SELECT seq, owner, private, unsafe, signature, embedding, model_version"
                " FROM images WHERE seq > ? AND dim > 0 ORDER BY seq",
                (seq,),
            ).fetchall()
        out = []
        for s, owner, private, unsafe, sig, emb, version in rows:
            meta = ImageMeta(self.live_id(s), owner, bool(private), bool(unsafe), sig)
            out.append((s, LiveImage(meta, np.frombuffer(emb, dtype=np.float32), version)))
        return out

    def delete(self, image_id: int, deleted_by: str | None = None) -> bool:
        """Durably tombstone an image (catalogue or live) and erase a live one's bytes and
        embedding, in one transaction; -> False if it was already deleted."""
        seq = self.seq_of(image_id)
        with self._lock:
            cur = self._conn.execute(
                "INSERT OR IGNORE INTO deletions (image_id, deleted_by) VALUES (?, ?)",
                (int(image_id), deleted_by),
            )
            if cur.rowcount and seq is not None:
                self._conn.execute(
                    "UPDATE images SET image = NULL, embedding = x'', dim = 0, signature = NULL"
                    " WHERE seq = ?",
                    (seq,),
                )
            self._conn.commit()
            return bool(cur.rowcount)

    def deletions_since(self, seq: int) -> list[tuple[int, int]]:
        """Tombstones after sequence number ``seq``, as (seq, image_id) in order."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT seq, image_id FROM deletions WHERE seq > ? ORDER BY seq", (seq,)
            ).fetchall()
        return [(int(s), int(i)) for s, i in rows]

    def deleted_ids(self) -> set[int]:
        return {i for _, i in self.deletions_since(0)}

    def image_bytes(self, image_id: int) -> bytes | None:
        seq = self.seq_of(image_id)
        if seq is None:
            return None
        with self._lock:
            row = self._conn.execute("SELECT image FROM images WHERE seq = ?", (seq,)).fetchone()
        return None if row is None else row[0]

    def __len__(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM images").fetchone()[0])


class CatalogueIndex:
    """The searchable catalogue: artifact index + metadata + replayed live additions."""

    def __init__(
        self,
        artifact: Artifact,
        live_log: str | Path | None = None,
        max_per_owner: int | None = None,
        retention_s: float | None = None,
    ):
        import pyarrow.parquet as pq

        self.version = artifact.version
        index_path = artifact.file("index.faiss")
        try:
            self.index = VectorIndex.load(index_path)
        except Exception as e:
            raise ArtifactError(f"cannot read index {index_path}: {e}") from e
        meta_path = artifact.file("catalogue.parquet")
        try:
            table = pq.read_table(meta_path).to_pydict()
        except Exception as e:
            raise ArtifactError(f"cannot read catalogue metadata {meta_path}: {e}") from e
        self.meta: dict[int, ImageMeta] = {
            int(i): ImageMeta(int(i), o, bool(p), bool(u), s)
            for i, o, p, u, s in zip(
                table["image_id"],
                table["owner"],
                table["private"],
                table["unsafe"],
                table["signature"],
                strict=True,
            )
        }
        if len(self.meta) != len(self.index):
            raise ArtifactError(
                f"artifact {artifact.name}/{artifact.version}: index has {len(self.index)} "
                f"vectors but catalogue.parquet {len(self.meta)} rows"
            )
        self._lock = threading.Lock()
        self._seq = self._del_seq = 0
        self.deleted: set[int] = set()  # tombstoned ids (an HNSW index keeps their vectors)
        self.skipped_other_model = 0
        files = artifact.manifest.get("files", {})
        # the pixels an indexing job kept: catalogue images, and the uploads it folded in
        self._images = artifact.file("images.npy") if "images.npy" in files else None
        self._live_images = (
            artifact.file("live_images.parquet") if "live_images.parquet" in files else None
        )
        self.log = CatalogueLog(live_log, max_per_owner, retention_s) if live_log else None
        self.sync()

    def sync(self) -> int:
        """Apply log records this replica has not seen yet (additions, then tombstones);
        returns how many images were added. Tombstones are read first: a deletion erases its
        row in the same transaction, so an image deleted meanwhile is never added."""
        if self.log is None:
            return 0
        with self._lock:
            tombstones = self.log.deletions_since(self._del_seq)
            rows = self.log.since(self._seq)
            added = 0
            for seq, live in rows:
                self._seq = seq
                if live.meta.image_id in self.meta or live.meta.image_id in self.deleted:
                    continue  # already folded into this artifact by the indexing job
                if label_version(live.model_version) != self.version:
                    self.skipped_other_model += 1  # embedded by another model: re-index job
                    continue
                self.index.add(live.embedding[None], np.array([live.meta.image_id]))
                self.meta[live.meta.image_id] = live.meta
                added += 1
            for seq, image_id in tombstones:
                self._del_seq = seq
                self.deleted.add(image_id)
                if self.meta.pop(image_id, None) is not None:
                    self.index.remove([image_id])
            return added

    def visible(self, image_id: int, user_id: str | None, admin: bool = False) -> ImageMeta | None:
        """The image's metadata if this caller may see it: not deleted, not unsafe, not
        private to someone else (admin: any live image). None otherwise, the same answer as
        for an id that never existed."""
        self.sync()
        with self._lock:
            m = self.meta.get(int(image_id))
        if m is None or admin:
            return m
        if m.unsafe or (m.private and (m.owner is None or m.owner != user_id)):
            return None
        return m

    def image(self, image_id: int) -> bytes | np.ndarray | None:
        """The stored pixels: an upload's bytes (the log, else the artifact it was folded
        into), or a catalogue image's (H, W) uint8 array; None when not kept."""
        image_id = int(image_id)
        if self.log is not None and (data := self.log.image_bytes(image_id)) is not None:
            return data
        if 0 <= image_id < LIVE_ID_BASE and self._images is not None:
            arr = np.load(self._images, mmap_mode="r")  # (N, H, W) uint8
            return np.array(arr[image_id]) if image_id < len(arr) else None
        if self._live_images is not None:
            import pyarrow.parquet as pq

            t = pq.read_table(self._live_images, filters=[("image_id", "=", image_id)])
            return t.column("data")[0].as_py() if t.num_rows else None
        return None

    def delete(self, image_id: int, deleted_by: str | None) -> bool:
        """Tombstone an image (durable before this returns) and drop it here at once;
        -> False if it was deleted already."""
        if self.log is None:
            raise RuntimeError("this catalogue has no live log configured: deletions disabled")
        done = self.log.delete(int(image_id), deleted_by)
        self.sync()
        return done

    def search(self, queries: np.ndarray, k: int) -> list[list[SearchHit]]:
        self.sync()
        with self._lock:
            scores, ids = self.index.search(
                queries, k + len(self.deleted) * (self.index.kind == "hnsw")
            )
            gone = self.deleted
        return [
            [
                SearchHit(int(i), float(s))
                for s, i in zip(srow, irow, strict=True)
                if i >= 0 and int(i) not in gone
            ][:k]
            for srow, irow in zip(scores, ids, strict=True)
        ]

    def add(
        self,
        embedding: np.ndarray,
        model_version: str,
        owner: str | None,
        private: bool,
        unsafe: bool,
        signature: str | None,
        image: bytes | None,
    ) -> int:
        if self.log is None:
            raise RuntimeError("this catalogue has no live log configured: additions disabled")
        if embedding.size != self.index.dim:
            raise ValueError(f"embedding has {embedding.size} dims, index {self.index.dim}")
        image_id = self.log.append(
            embedding, model_version, owner, private, unsafe, signature, image
        )
        self.sync()
        return image_id

    def retrieve(
        self,
        embedding: np.ndarray,
        k: int,
        user_id: str | None = None,
        rerank_cfg: RerankConfig | None = None,
        overfetch: int = 4,
    ) -> list[SearchHit]:
        """(D,) query embedding -> top k after reranking: ANN over k x overfetch candidates,
        then the reranking rules here, where the candidates' metadata already is."""
        hits = self.search(np.asarray(embedding, np.float32)[None], k * overfetch)[0]
        with self._lock:
            meta = {h.image_id: self.meta[h.image_id] for h in hits if h.image_id in self.meta}
        kept = rerank([(h.image_id, h.score) for h in hits], meta, k, user_id, rerank_cfg)
        return [SearchHit(i, s) for i, s in kept]

    def info(self) -> dict:
        with self._lock:
            size = len(self.meta)
        return {"version": self.version, "size": size, "kind": self.index.kind}

    def __len__(self) -> int:
        return len(self.meta)
