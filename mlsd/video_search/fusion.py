"""Fusion of ranked lists from several retrieval branches (the book's fusion layer).

``rrf``: weighted reciprocal rank fusion, score = sum_b w_b / (k + rank_b) (rank from 1).
``weighted_sum``: each branch's scores min-max normalised to [0, 1] over its list, then
sum_b w_b * s_b (a document missing from a branch gets 0 there).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class FusionConfig:
    method: str = "rrf"  # rrf | weighted_sum
    weights: dict[str, float] = field(default_factory=dict)  # branch -> weight (default 1)
    rrf_k: float = 60.0

    def __post_init__(self):
        if self.method not in ("rrf", "weighted_sum"):
            raise ValueError(f"fusion method must be 'rrf' or 'weighted_sum', got {self.method!r}")


@dataclass
class Fused:
    doc_id: int
    score: float
    sources: dict[str, int]  # branch -> 1-based rank in that branch


def fuse(
    branches: dict[str, tuple[np.ndarray, np.ndarray]], cfg: FusionConfig | None = None
) -> list[Fused]:
    """branches: name -> (ids, scores) best first. Returns all documents, best first."""
    cfg = cfg or FusionConfig()
    total: dict[int, float] = {}
    sources: dict[int, dict[str, int]] = {}
    for name, (ids, scores) in branches.items():
        w = cfg.weights.get(name, 1.0)
        ids = np.asarray(ids, np.int64)
        if cfg.method == "rrf":
            contrib = w / (cfg.rrf_k + np.arange(1, len(ids) + 1))
        else:
            s = np.asarray(scores, np.float64)
            span = s.max() - s.min() if len(s) else 0.0
            contrib = w * ((s - s.min()) / span if span > 0 else np.ones_like(s))
        for rank, (i, c) in enumerate(zip(ids.tolist(), contrib.tolist(), strict=True), 1):
            if i in sources and name in sources[i]:
                continue  # a branch listing a document twice counts once
            total[i] = total.get(i, 0.0) + c
            sources.setdefault(i, {})[name] = rank
    order = sorted(total, key=lambda i: (-total[i], i))
    return [Fused(i, total[i], sources[i]) for i in order]
