"""Vector indexes for retrieval (the book's ANN section), built with faiss.

Cosine similarity = inner product of L2-normalised vectors. ``exact`` (flat) search suits small
catalogues; above ``auto_threshold`` vectors the index becomes approximate, by ``mode``:

- ``speed`` (default): ``hnsw`` (graph-based ANN, M=32), ``efSearch`` tuned to the target recall
  (bench.ann, 1M x 128: >= 100x exact search at recall@10 0.95; README "ANN");
- ``memory``: ``ivfsq`` (clustering-based ANN over 8-bit scalar-quantised vectors: a quarter
  of flat's bytes plus ids), ``nprobe`` tuned to the target recall.

``ivf`` (full vectors in inverted lists) stays selectable. Search knobs are tuned against exact
search on a held-out sample of the catalogue itself, so the knob users turn is recall. Every
index keeps caller-given int64 ids and takes additions after it is built; an HNSW graph cannot
drop a node, so callers filter its hits (``removes`` says which kind this is).
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import asdict, dataclass

import faiss
import numpy as np

KINDS = ("auto", "flat", "ivf", "ivfsq", "hnsw")
IVF_KINDS = ("ivf", "ivfsq")  # clustering-based: nprobe is their knob
MODES = {"speed": "hnsw", "memory": "ivfsq"}  # what "auto" becomes above the threshold
NPROBE_LADDER = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024)
TUNE_QUERIES = 500  # held-out catalogue vectors the search knob is tuned on
EF_LADDER = (16, 24, 32, 48, 64, 80, 96, 128, 160, 192, 256, 384, 512, 768, 1024)


@dataclass
class IndexConfig:
    kind: str = "auto"
    auto_threshold: int = 50_000  # above this many vectors, "auto" builds an ANN index
    mode: str = "speed"  # "auto" above the threshold: speed = hnsw, memory = ivfsq
    nlist: int = 0  # IVF lists; 0 = 4 * sqrt(N), clipped to [16, 65536]
    nprobe: int = 0  # IVF lists probed; 0 = tune to target_recall
    target_recall: float = 0.96  # of the tuned knob, on held-out catalogue queries (recall@10)
    hnsw_m: int = 32
    ef_construction: int = 200
    ef_search: int = 0  # HNSW candidates searched; 0 = tune to target_recall

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"index kind must be one of {KINDS}, got {self.kind!r}")
        if self.mode not in MODES:
            raise ValueError(f"index mode must be one of {tuple(MODES)}, got {self.mode!r}")
        if not 0.0 < self.target_recall <= 1.0:
            raise ValueError(f"target_recall must be in (0, 1], got {self.target_recall}")

    def resolve_kind(self, n: int) -> str:
        if self.kind != "auto":
            return self.kind
        return "flat" if n <= self.auto_threshold else MODES[self.mode]

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
            hnsw.hnsw.efSearch = cfg.ef_search or 64
            index = faiss.IndexIDMap2(hnsw)
        else:
            nlist = cfg.nlist or int(min(65536, max(16, 4 * math.sqrt(max(n, 1)))))
            if n < nlist:
                raise ValueError(f"IVF needs at least nlist={nlist} vectors to train, got {n}")
            quantizer = faiss.IndexFlatIP(d)
            if kind == "ivfsq":  # memory mode: 8-bit codes, d bytes a vector (flat: 4 d)
                index = faiss.IndexIVFScalarQuantizer(
                    quantizer, d, nlist, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT
                )
            else:
                index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
            sample = (
                x
                if n <= 256 * nlist
                else x[np.random.default_rng(0).choice(n, 256 * nlist, replace=False)]
            )
            index.train(sample)
        out = cls(index, kind, d)
        given = {"ivf": cfg.nprobe, "ivfsq": cfg.nprobe, "hnsw": cfg.ef_search}.get(kind)
        n_q = min(TUNE_QUERIES, n // 10)
        if given is None or given or not n_q:  # flat, a knob given, or none to hold out
            out.add(x, ids)
            if given:
                out.set_knob(given)
            return out
        # tune on held-out queries: a seeded sample of the catalogue is added only after
        # tuning, so the index has never seen them (a catalogue member found in an HNSW graph
        # brings its graph neighbours with it: recall would look far higher than it is)
        held = np.zeros(n, bool)
        held[np.random.default_rng(0).choice(n, n_q, replace=False)] = True
        out.add(x[~held], ids[~held])
        exact = faiss.IndexFlatIP(d)
        exact.add(x[~held])
        _, pos = exact.search(x[held], 10)
        out.tune(x[held], ids[~held][pos], cfg.target_recall)
        out.add(x[held], ids[held])
        return out

    @property
    def removes(self) -> bool:
        """Whether ``remove`` drops vectors (an HNSW graph keeps them: filter its hits)."""
        return self.kind != "hnsw"

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
        if not self.removes or not len(ids):
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
        if self.kind in IVF_KINDS:
            self.index.nprobe = int(max(1, min(nprobe, self.index.nlist)))

    @property
    def nprobe(self) -> int | None:
        return int(self.index.nprobe) if self.kind in IVF_KINDS else None

    def set_ef_search(self, ef: int) -> None:
        if self.kind == "hnsw":
            faiss.downcast_index(self.index.index).hnsw.efSearch = int(ef)

    @property
    def ef_search(self) -> int | None:
        if self.kind != "hnsw":
            return None
        return int(faiss.downcast_index(self.index.index).hnsw.efSearch)

    @property
    def knob(self) -> tuple[str, int] | None:
        """The search knob that trades recall for speed and its value: ("nprobe", n) for IVF,
        ("efSearch", ef) for HNSW; None for exact search."""
        if self.kind in IVF_KINDS:
            return "nprobe", self.nprobe
        if self.kind == "hnsw":
            return "efSearch", self.ef_search
        return None

    def set_knob(self, value: int) -> None:
        """Set :attr:`knob` (IVF ``nprobe`` or HNSW ``efSearch``)."""
        if self.kind in IVF_KINDS:
            self.set_nprobe(value)
        elif self.kind == "hnsw":
            self.set_ef_search(value)
        else:
            raise ValueError(f"a {self.kind} index has no search knob")

    def tune(self, queries: np.ndarray, truth: np.ndarray, target_recall: float) -> int:
        """Set the search knob (IVF ``nprobe``, HNSW ``efSearch``) to the smallest value on
        its ladder whose recall@k (k = truth's width) against exact search reaches the target;
        -> that value. Too low a ceiling (8-bit codes) warns and keeps the widest setting."""
        k = truth.shape[1]
        if self.kind in IVF_KINDS:
            nlist = self.index.nlist
            ladder = sorted({p for p in NPROBE_LADDER if p < nlist} | {nlist})
        elif self.kind == "hnsw":
            ladder = [e for e in EF_LADDER if e >= k]
        else:
            raise ValueError(f"a {self.kind} index has no search knob to tune")
        recall = 0.0
        for value in ladder:
            self.set_knob(value)
            recall = recall_at_k_ids(self.search(queries, k)[1], truth)
            if recall >= target_recall:
                return value
        warnings.warn(
            f"{self.kind} index reaches recall@{k} {recall:.3f} at most, below the target "
            f"{target_recall}: searching with the widest setting ({ladder[-1]})",
            stacklevel=2,
        )
        return ladder[-1]

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
                else "ivfsq"
                if isinstance(inner, faiss.IndexIVFScalarQuantizer)
                else "ivf"
                if isinstance(inner, faiss.IndexIVF)
                else "flat"
            )
        return cls(index, kind, index.d)


def recall_at_k_ids(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean share of each row's true top-k ids present in the found row (ANN recall@k)."""
    k = truth.shape[1]
    return float(np.mean([len(set(f[:k]) & set(t)) / k for f, t in zip(found, truth, strict=True)]))
