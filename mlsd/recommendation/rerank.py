"""Reranking: the book's business rules applied after ranking.

Drop already-watched videos, cap how many videos of one genre the top k may hold (diversity),
an optional freshness boost for recently released videos, and a hook for region / age
filters (a callable that says whether a video may be shown to this user).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

SECONDS_PER_DAY = 86400.0


@dataclass
class RecRerankConfig:
    drop_watched: bool = True
    genre_cap: int = 0  # max videos sharing one genre in the top k; 0 = no cap
    freshness_boost: float = 0.0  # added to the score of a video released "now", decaying
    freshness_half_life_days: float = 365.0

    def to_dict(self) -> dict:
        return asdict(self)


def rerank(
    items: np.ndarray,  # (n,) ranked candidates
    scores: np.ndarray,  # (n,) ranking scores
    k: int,
    genres: np.ndarray,  # (I, G) multi-hot
    release_ts: np.ndarray,  # (I,) 0 = unknown
    now: float,
    watched: set[int] | None = None,
    cfg: RecRerankConfig | None = None,
    allowed: Callable[[int], bool] | None = None,  # region / age rules hook
) -> tuple[np.ndarray, np.ndarray]:
    """-> (items, scores) of at most k videos, best first."""
    cfg = cfg or RecRerankConfig()
    items, scores = np.asarray(items, np.int64), np.asarray(scores, np.float64).copy()
    if cfg.freshness_boost:
        rel = release_ts[items]
        age_days = np.where(rel > 0, np.maximum(now - rel, 0) / SECONDS_PER_DAY, np.inf)
        scores += cfg.freshness_boost * 0.5 ** (age_days / cfg.freshness_half_life_days)
    order = np.argsort(-scores, kind="stable")
    chosen, deferred = [], []
    per_genre = np.zeros(genres.shape[1], np.int64)
    for j in order:
        item = int(items[j])
        if cfg.drop_watched and watched and item in watched:
            continue
        if allowed is not None and not allowed(item):
            continue
        g = genres[item] > 0
        if cfg.genre_cap and (per_genre[g] >= cfg.genre_cap).any():
            deferred.append(j)  # used only if the capped list runs short
            continue
        per_genre[g] += 1
        chosen.append(j)
        if len(chosen) == k:
            break
    chosen += deferred[: k - len(chosen)]
    chosen = np.array(chosen[:k], np.int64)
    return items[chosen], scores[chosen]
