"""Fusion of ranked lists from several retrieval branches (the book's fusion layer).

A branch gives (ids, scores) best first. Before fusing, a hit counts only if it is strong
enough for its branch: ``min_score`` (its raw score, e.g. the text branch's query coverage)
and ``min_relative`` (its raw score as a share of the branch's best). Then:

``rrf``: weighted reciprocal rank fusion, score = sum_b w_b / (k + rank_b) (rank from 1): the
  rank alone counts, however weak the match;
``weighted_sum``: sum_b w_b * s_b over each branch's calibrated scores (a document missing from
  a branch gets 0 there). Calibration per branch (``normalise``): ``minmax`` to [0, 1] over the
  branch's list, ``zscore`` over it, or ``none`` where the branch's score already is a strength
  on a fixed scale (the text branch's coverage in [0, 1]). Strength, not only rank, so a
  video the visual branch alone finds well can outrank one that matched a word of the query.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

NORMALISERS = ("minmax", "zscore", "none")


@dataclass
class FusionConfig:
    method: str = "rrf"  # rrf | weighted_sum
    weights: dict[str, float] = field(default_factory=dict)  # branch -> weight (default 1)
    rrf_k: float = 60.0
    normalise: dict[str, str] = field(default_factory=dict)  # branch -> minmax | zscore | none
    min_score: dict[str, float] = field(default_factory=dict)  # branch -> raw score floor
    min_relative: dict[str, float] = field(default_factory=dict)  # branch -> share of its best

    def __post_init__(self):
        if self.method not in ("rrf", "weighted_sum"):
            raise ValueError(f"fusion method must be 'rrf' or 'weighted_sum', got {self.method!r}")
        bad = {b: n for b, n in self.normalise.items() if n not in NORMALISERS}
        if bad:
            raise ValueError(f"normalise must be one of {NORMALISERS}, got {bad}")
        if self.rrf_k < 0:
            raise ValueError(f"rrf_k must be >= 0, got {self.rrf_k}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Fused:
    doc_id: int
    score: float
    sources: dict[str, int]  # branch -> 1-based rank in that branch


def _calibrate(s: np.ndarray, how: str) -> np.ndarray:
    if how == "none" or len(s) == 0:
        return s
    if how == "zscore":
        sd = s.std()
        return (s - s.mean()) / sd if sd > 0 else np.zeros_like(s)
    span = s.max() - s.min()
    return (s - s.min()) / span if span > 0 else np.ones_like(s)


def strong_hits(
    name: str, ids: np.ndarray, scores: np.ndarray, cfg: FusionConfig
) -> tuple[np.ndarray, np.ndarray]:
    """The branch's hits that are strong enough to count (order kept)."""
    ids, scores = np.asarray(ids, np.int64), np.asarray(scores, np.float64)
    keep = np.ones(len(ids), bool)
    if name in cfg.min_score:
        keep &= scores >= cfg.min_score[name]
    if name in cfg.min_relative and len(scores):
        keep &= scores >= cfg.min_relative[name] * scores.max()
    return ids[keep], scores[keep]


def fuse(
    branches: dict[str, tuple[np.ndarray, np.ndarray]], cfg: FusionConfig | None = None
) -> list[Fused]:
    """branches: name -> (ids, scores) best first. Returns all documents, best first."""
    cfg = cfg or FusionConfig()
    total: dict[int, float] = {}
    sources: dict[int, dict[str, int]] = {}
    for name, (ids, scores) in branches.items():
        ids, scores = strong_hits(name, ids, scores, cfg)
        w = cfg.weights.get(name, 1.0)
        if cfg.method == "rrf":
            contrib = w / (cfg.rrf_k + np.arange(1, len(ids) + 1))
        else:
            contrib = w * _calibrate(scores, cfg.normalise.get(name, "minmax"))
        for rank, (i, c) in enumerate(zip(ids.tolist(), contrib.tolist(), strict=True), 1):
            if i in sources and name in sources[i]:
                continue  # a branch listing a document twice counts once
            total[i] = total.get(i, 0.0) + c
            sources.setdefault(i, {})[name] = rank
    order = sorted(total, key=lambda i: (-total[i], i))
    return [Fused(i, total[i], sources[i]) for i in order]
