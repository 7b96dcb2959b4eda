"""Vector indexes for retrieval (the book's ANN section), built with faiss.

Cosine similarity = inner product of L2-normalised vectors. ``exact`` (flat) search suits small
catalogues; above ``auto_threshold`` vectors the index becomes approximate: ``ivf`` (clustering-
based ANN) or ``hnsw`` (graph-based ANN). IVF's ``nprobe`` can be tuned to a target recall
against exact search on a sample of the catalogue itself, so the knob users turn is recall.
Every index keeps caller-given int64 ids, and takes additions after it is built.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass

import faiss
import numpy as np

KINDS = ("auto", "flat", "ivf", "hnsw")


@dataclass
class IndexConfig:
    kind: str = "auto"
    auto_threshold: int = 50_000  # above this many vectors, "auto" builds an ANN index
    auto_kind: str = "ivf"  # what "auto" becomes above the threshold
    nlist: int = 0  # IVF lists; 0 = 4 * sqrt(N), clipped to [16, 65536]
    nprobe: int = 0  # IVF lists probed; 0 = tune to target_recall
    target_recall: float = 0.96
    hnsw_m: int = 32
    ef_construction: int = 200
    ef_search: int = 64

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"index kind must be one of {KINDS}, got {self.kind!r}")

    def resolve_kind(self, n: int) -> str:
        if self.kind != "auto":
            return self.kind
        return "flat" if n <= self.auto_threshold else self.auto_kind

    def to_dict(self) -> dict:
        return asdict(self)


def _as_f32(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
    if x.ndim != 2:
        raise ValueError(f"vectors must be (N, D), got shape {x.shape}")
    return x


class VectorIndex:
    """A faiss index over (id, vector) pairs with inner-product scores."""

    def __init__(self, index: faiss.Index, kind: str, dim: int):
        self.index, self.kind, self.dim = index, kind, dim

    # building ------------------------------------------------------------------------------
    @classmethod
    def build(
        cls, vectors: np.ndarray, ids: np.ndarray | None = None, cfg: IndexConfig | None = None
    ) -> VectorIndex:
        cfg = cfg or IndexConfig()
        x = _as_f32(vectors)
        n, d = x.shape
        ids = np.arange(n, dtype=np.int64) if ids is None else np.asarray(ids, dtype=np.int64)
        kind = cfg.resolve_kind(n)
        if kind == "flat":
            index = faiss.IndexIDMap2(faiss.IndexFlatIP(d))
        elif kind == "hnsw":
            hnsw = faiss.IndexHNSWFlat(d, cfg.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            hnsw.hnsw.efConstruction = cfg.ef_construction
            hnsw.hnsw.efSearch = cfg.ef_search
            index = faiss.IndexIDMap2(hnsw)
        else:
            nlist = cfg.nlist or int(min(65536, max(16, 4 * math.sqrt(max(n, 1)))))
            if n < nlist:
                raise ValueError(f"IVF needs at least nlist={nlist} vectors to train, got {n}")
            quantizer = faiss.IndexFlatIP(d)
            index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
            sample = (
                x
                if n <= 256 * nlist
                else x[np.random.default_rng(0).choice(n, 256 * nlist, replace=False)]
            )
            index.train(sample)
        out = cls(index, kind, d)
        out.add(x, ids)
        if kind == "ivf":
            out.set_nprobe(cfg.nprobe or out.tune_nprobe(x, cfg.target_recall, ids))
        return out

    def add(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        x = _as_f32(vectors)
        if x.shape[1] != self.dim:
            raise ValueError(f"vectors have dimension {x.shape[1]}, index has {self.dim}")
        ids = np.asarray(ids, dtype=np.int64)
        if len(ids) != len(x):
            raise ValueError(f"{len(x)} vectors but {len(ids)} ids")
        self.index.add_with_ids(x, ids)

    def remove(self, ids: np.ndarray | list[int]) -> int:
        """Drop vectors by id; -> how many were there. An HNSW graph cannot drop a node
        (faiss), so it keeps them: callers filter its hits by their own metadata."""
        ids = np.asarray(ids, dtype=np.int64)
        if self.kind == "hnsw" or not len(ids):
            return 0
        return int(self.index.remove_ids(ids))

    # searching -----------------------------------------------------------------------------
    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, ids), each (Q, k); missing slots have id -1 and score -inf."""
        q = _as_f32(queries)
        if q.shape[1] != self.dim:
            raise ValueError(f"queries have dimension {q.shape[1]}, index has {self.dim}")
        k = int(k)
        if k <= 0:
            raise ValueError(f"k must be positive, got {k}")
        if len(self) == 0:
            return np.full((len(q), k), -np.inf, np.float32), np.full((len(q), k), -1, np.int64)
        scores, ids = self.index.search(q, k)
        scores[ids < 0] = -np.inf
        return scores, ids

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def set_nprobe(self, nprobe: int) -> None:
        if self.kind == "ivf":
            self.index.nprobe = int(max(1, min(nprobe, self.index.nlist)))

    @property
    def nprobe(self) -> int | None:
        return int(self.index.nprobe) if self.kind == "ivf" else None

    def set_ef_search(self, ef: int) -> None:
        if self.kind == "hnsw":
            faiss.downcast_index(self.index.index).hnsw.efSearch = int(ef)

    def tune_nprobe(
        self,
        vectors: np.ndarray,
        target_recall: float,
        ids: np.ndarray | None = None,
        k: int = 10,
        n_queries: int = 500,
    ) -> int:
        """Smallest nprobe on a ladder reaching ``target_recall``@k against exact search.

        Leave-one-out: queries are a seeded sample of the catalogue itself, and each query's own
        entry is dropped from both result lists, so the queries behave like unseen ones drawn
        from the catalogue's distribution.
        """
        if self.kind != "ivf":
            raise ValueError("only IVF indexes have nprobe")
        x = _as_f32(vectors)
        ids = np.arange(len(x), dtype=np.int64) if ids is None else np.asarray(ids, np.int64)
        rng = np.random.default_rng(0)
        pick = rng.choice(len(x), min(n_queries, len(x)), replace=False)
        q = x[pick]
        exact = faiss.IndexFlatIP(self.dim)
        exact.add(x)
        _, pos = exact.search(q, k + 1)
        truth = _drop_self(ids[pos], ids[pick], k)
        nlist = self.index.nlist
        ladder = [1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024]
        for p in sorted({p for p in ladder if p < nlist} | {nlist}):
            self.index.nprobe = p
            _, got = self.index.search(q, k + 1)
            if recall_at_k_ids(_drop_self(got, ids[pick], k), truth) >= target_recall:
                return p
        return nlist

    # persistence ---------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        faiss.write_index(self.index, str(path))

    @classmethod
    def load(cls, path: str | os.PathLike, kind: str | None = None) -> VectorIndex:
        index = faiss.read_index(str(path))
        if kind is None:
            inner = (
                faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap2) else index
            )
            kind = (
                "hnsw"
                if isinstance(inner, faiss.IndexHNSW)
                else "ivf"
                if isinstance(inner, faiss.IndexIVF)
                else "flat"
            )
        return cls(index, kind, index.d)


def _drop_self(rows: np.ndarray, self_ids: np.ndarray, k: int) -> np.ndarray:
    out = np.full((len(rows), k), -1, dtype=np.int64)
    for i, (row, me) in enumerate(zip(rows, self_ids, strict=True)):
        kept = row[row != me][:k]
        out[i, : len(kept)] = kept
    return out


def recall_at_k_ids(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean share of each row's true top-k ids present in the found row (ANN recall@k)."""
    k = truth.shape[1]
    return float(np.mean([len(set(f[:k]) & set(t)) / k for f, t in zip(found, truth, strict=True)]))
