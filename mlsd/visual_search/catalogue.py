"""The image catalogue: the indexed set (from an artifact) plus a durable log of live additions.

The book's indexing pipeline adds new images to the index while the system serves. Here each
addition is committed to an append-only log in the state layer (``mlsd.state``: SQLite on a
laptop, Postgres on a cluster; the uploaded bytes in its object store) *before* it is
acknowledged, and every index replica, on any node, replays the log on start and before each
search, so an acknowledged image is never lost and every replica sees it. The next indexing job
folds the log into a new artifact version.

A deletion is a tombstone in the same log (table ``deletions``), committed in one transaction
with the erasure of the live image's bytes and embedding. Replicas read the tombstones before
the additions on every sync, so a deleted image is never indexed again, by any replica, after a
restart or in the next artifact (the indexing job leaves tombstoned ids out).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import numpy as np
import pyarrow.parquet as pq
from sqlalchemy import bindparam, func, insert, select, update

from mlsd.artifacts import Artifact, ArtifactError, label_version
from mlsd.index import VectorIndex
from mlsd.state import LIVE_ID_BASE, Caller, Database, Log, ObjectStore, may_see
from mlsd.state.schema import vs_deletions as DELETIONS
from mlsd.state.schema import vs_images as IMAGES
from mlsd.visual_search.rerank import ImageMeta, RerankConfig, rerank

# the statements a replica runs per request or search: built once, parameters per call
INSERT = insert(IMAGES)
SINCE = (
    select(
        IMAGES.c.seq, IMAGES.c.owner, IMAGES.c.private, IMAGES.c.unsafe, IMAGES.c.signature,
        IMAGES.c.embedding, IMAGES.c.model_version,
    )
    .where(IMAGES.c.seq > bindparam("after"), IMAGES.c.dim > 0)  # dim 0: erased by a deletion
    .order_by(IMAGES.c.seq)
)  # fmt: skip
DELETIONS_SINCE = (
    select(DELETIONS.c.seq, DELETIONS.c.image_id)
    .where(DELETIONS.c.seq > bindparam("after"))
    .order_by(DELETIONS.c.seq)
)
IMAGE_KEY = select(IMAGES.c.image_key).where(IMAGES.c.seq == bindparam("seq"))
OWNED = select(func.count()).select_from(IMAGES).where(IMAGES.c.owner == bindparam("owner"))


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


class CatalogueLog(Log):
    """The append-only log of images added at serving time, in the state layer (one store every
    replica on every node reads); the uploaded bytes in the object store, keyed from the row.

    Bounded: at most ``max_per_owner`` images per owner, and the uploaded bytes are kept
    ``retention_s`` seconds (the embedding, and so search, stays; the next indexing job has
    folded the image in by then).
    """

    def __init__(
        self,
        store: str | Database,
        objects: str | ObjectStore | None = None,
        max_per_owner: int | None = None,
        retention_s: float | None = None,
    ):
        super().__init__(store, objects)
        self.ids = self.db.ids("vs_images")
        self.max_per_owner, self.retention_s = max_per_owner, retention_s
        self._pruned = 0.0

    def live_id(self, seq: int) -> int:
        return self.ids.live_id(seq)

    def prune(self, now: float | None = None) -> int:
        """Drop uploaded bytes older than the retention (an indexed range, not a scan)."""
        if self.retention_s is None:
            return 0
        now = time.time() if now is None else now
        with self.db.write() as c:
            old = c.execute(
                select(IMAGES.c.seq, IMAGES.c.image_key).where(
                    IMAGES.c.created < now - self.retention_s, IMAGES.c.image_key.is_not(None)
                )
            ).all()
            if old:
                c.execute(
                    update(IMAGES)
                    .where(IMAGES.c.seq.in_([s for s, _ in old]))
                    .values(image_key=None)
                )
        for _, key in old:  # after the commit: no row names them any more
            self.objects.delete(key)
        self._pruned = now
        return len(old)

    def _owned(self, c, owner: str) -> int:
        return self.db.rows(c, OWNED, {"owner": owner})[0][0]

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
        if self.retention_s is not None and time.time() - self._pruned > 60:
            self.prune()
        quota = self.max_per_owner is not None and owner is not None
        key = None
        if image is not None:
            if self.objects is None:
                raise RuntimeError("this catalogue has no object store for uploaded bytes")
            key = self.objects.put(ObjectStore.new_key("visual_search/images"), image)
        try:
            with self.db.write("vs_images") as c:
                if quota:
                    self._check_quota(c, owner)
                row = {
                    "owner": owner,
                    "private": bool(private),
                    "unsafe": bool(unsafe),
                    "signature": signature,
                    "embedding": emb.tobytes(),
                    "dim": emb.size,
                    "model_version": model_version,
                    "image_key": key,
                    "created": time.time(),
                }
                seq = self.db.insert(c, INSERT, row)
        except BaseException:  # over quota, or the store failed: never acknowledged
            if key is not None:
                self.objects.delete(key)  # so nothing may keep its bytes
            raise
        return self.live_id(int(seq))

    def _check_quota(self, c, owner: str) -> None:
        n = self._owned(c, owner)
        if n >= self.max_per_owner:
            raise QuotaExceeded(f"{owner} has {n} images, the most one owner may add")

    def _since(self, c, seq: int) -> list[tuple[int, LiveImage]]:
        rows = self.db.rows(c, SINCE, {"after": seq})
        out = []
        for s, owner, private, unsafe, sig, emb, version in rows:
            meta = ImageMeta(self.live_id(s), owner, bool(private), bool(unsafe), sig)
            out.append((s, LiveImage(meta, np.frombuffer(emb, dtype=np.float32), version)))
        return out

    def _deletions_since(self, c, seq: int) -> list[tuple[int, int]]:
        rows = self.db.rows(c, DELETIONS_SINCE, {"after": seq})
        return [(int(s), int(i)) for s, i in rows]

    def since(self, seq: int) -> list[tuple[int, LiveImage]]:
        """Records after sequence number ``seq``, as (seq, image) in order."""
        with self.db.read() as c:
            return self._since(c, seq)

    def changes(
        self, del_seq: int, seq: int
    ) -> tuple[list[tuple[int, int]], list[tuple[int, LiveImage]]]:
        """(tombstones after ``del_seq``, additions after ``seq``) in one read: tombstones
        first, so an image deleted meanwhile (its row erased with the tombstone) is never
        added."""
        with self.db.read() as c:
            return self._deletions_since(c, del_seq), self._since(c, seq)

    def delete(self, image_id: int, deleted_by: str | None = None) -> bool:
        """Durably tombstone an image (catalogue or live) and erase a live one's bytes and
        embedding, in one transaction; -> False if it was already deleted."""
        seq = self.ids.seq_of(image_id)
        key = None
        with self.db.write("vs_deletions") as c:
            done = c.execute(  # a row back: this call made the tombstone
                self.db.insert_ignore(DELETIONS)
                .values(image_id=int(image_id), deleted_by=deleted_by, created=time.time())
                .returning(DELETIONS.c.seq)
            ).first()
            if done and seq is not None:
                key = c.execute(
                    select(IMAGES.c.image_key).where(IMAGES.c.seq == seq)
                ).scalar_one_or_none()
                c.execute(
                    update(IMAGES)
                    .where(IMAGES.c.seq == seq)
                    .values(image_key=None, embedding=b"", dim=0, signature=None)
                )
        if key is not None:
            self.objects.delete(key)  # after the commit: the row no longer names it
        return done is not None

    def deletions_since(self, seq: int) -> list[tuple[int, int]]:
        """Tombstones after sequence number ``seq``, as (seq, image_id) in order."""
        with self.db.read() as c:
            return self._deletions_since(c, seq)

    def deleted_ids(self) -> set[int]:
        return {i for _, i in self.deletions_since(0)}

    def image_bytes(self, image_id: int) -> bytes | None:
        seq = self.ids.seq_of(image_id)
        if seq is None:
            return None
        with self.db.read() as c:
            found = self.db.rows(c, IMAGE_KEY, {"seq": seq})
        key = found[0][0] if found else None
        return self.objects.get(key) if key is not None and self.objects is not None else None

    def __len__(self) -> int:
        with self.db.read() as c:
            return int(c.execute(select(func.count()).select_from(IMAGES)).scalar_one())


class CatalogueIndex:
    """The searchable catalogue: artifact index + metadata + replayed live additions."""

    def __init__(
        self,
        artifact: Artifact,
        live_log: str | Database | None = None,
        objects: str | ObjectStore | None = None,
        max_per_owner: int | None = None,
        retention_s: float | None = None,
    ):
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
        self._seen: int | None = None  # the store's version at the last sync (SQLite)
        self.deleted: set[int] = set()  # tombstoned ids (an HNSW index keeps their vectors)
        self.skipped_other_model = 0
        files = artifact.manifest.get("files", {})
        # the pixels an indexing job kept: catalogue images, and the uploads it folded in
        self._images = artifact.file("images.npy") if "images.npy" in files else None
        self._photos = artifact.file("images.parquet") if "images.parquet" in files else None
        self._live_images = (
            artifact.file("live_images.parquet") if "live_images.parquet" in files else None
        )
        self.log = CatalogueLog(live_log, objects, max_per_owner, retention_s) if live_log else None
        self.sync()

    def sync(self) -> int:
        """Apply log records this replica has not seen yet (additions, then tombstones);
        returns how many images were added. Tombstones are read first: a deletion erases its
        row in the same transaction, so an image deleted meanwhile is never added."""
        if self.log is None:
            return 0
        with self._lock:
            version = self.log.db.version()  # before the read: a later commit shows next time
            if version is not None and version == self._seen:
                return 0  # nothing was committed since the last sync: no query at all
            tombstones, rows = self.log.changes(self._del_seq, self._seq)
            self._seen = version
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

    def visible(self, image_id: int, caller: Caller) -> ImageMeta | None:
        """The image's metadata if ``caller`` may see it (``mlsd.state.access``: unsafe images
        are hidden like private ones); None otherwise, the same answer as for an id that never
        existed or was deleted."""
        self.sync()
        with self._lock:
            m = self.meta.get(int(image_id))
        if m is None or not may_see(caller, m.owner, m.private, hidden=m.unsafe):
            return None
        return m

    def image(self, image_id: int) -> bytes | np.ndarray | None:
        """The stored pixels: an upload's bytes (the log, else the artifact it was folded
        into), a catalogue photo's bytes, or a demo catalogue image's (H, W) uint8 array;
        None when not kept."""
        image_id = int(image_id)
        if self.log is not None and (data := self.log.image_bytes(image_id)) is not None:
            return data
        if 0 <= image_id < LIVE_ID_BASE and self._images is not None:
            arr = np.load(self._images, mmap_mode="r")  # (N, H, W) uint8
            return np.array(arr[image_id]) if image_id < len(arr) else None
        for path in (self._photos, self._live_images):
            if path is not None:  # row groups of 256 by id: the filter reads one or two
                t = pq.read_table(path, filters=[("image_id", "=", image_id)])
                if t.num_rows:
                    return t.column("data")[0].as_py()
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
                queries, k + len(self.deleted) * (not self.index.removes)
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
