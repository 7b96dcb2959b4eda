"""Offline evaluation of top-k recommendation, the protocol of ANCHORS.md.

Relevant = a held-out interaction with rating >= ``relevant_min`` (the business rule, default
4). Users with at least one relevant test item are evaluated. Candidates = items seen in train
minus the user's own train items. Binary gains; nDCG's ideal = min(|Rel|, k) ones; MAP@k
normalised by min(|Rel|, k).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from mlsd.metrics import average_precision_at_k, ndcg_at_k, precision_at_k, recall_at_k


@dataclass
class EvalSet:
    users: np.ndarray  # (U,) evaluated user ids
    relevant: list[set[int]]  # per evaluated user, the relevant test items
    seen: list[np.ndarray]  # per evaluated user, the items in their train history
    catalogue: np.ndarray  # (I,) bool, items that appear in train (the candidate pool)
    request_ts: np.ndarray  # (U,) when the user comes back: their first test interaction

    @classmethod
    def build(
        cls, train: pd.DataFrame, test: pd.DataFrame, n_items: int, relevant_min: int = 4
    ) -> EvalSet:
        rel = test[test.rating >= relevant_min].groupby("user_id")["item_id"].apply(set)
        first_ts = test.groupby("user_id")["timestamp"].min()
        seen = train.groupby("user_id")["item_id"].apply(lambda s: s.to_numpy())
        users = np.array(sorted(rel.index), dtype=np.int64)
        catalogue = np.zeros(n_items, dtype=bool)
        catalogue[train.item_id.unique()] = True
        empty = np.zeros(0, dtype=np.int64)
        return cls(
            users=users,
            relevant=[rel[u] for u in users],
            seen=[seen.get(u, empty) for u in users],
            catalogue=catalogue,
            request_ts=first_ts.reindex(users).to_numpy(np.int64),
        )

    def mask_scores(self, scores: np.ndarray) -> np.ndarray:
        """(U, I) scores -> the same with non-candidates set to -inf."""
        s = np.where(self.catalogue[None, :], scores.astype(np.float64), -np.inf)
        for row, items in enumerate(self.seen):
            s[row, items] = -np.inf
        return s


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """(U, I) -> (U, k) item ids by descending score (ties broken by lower id)."""
    k = min(k, scores.shape[1])
    part = np.argpartition(-scores, kth=k - 1, axis=1)[:, :k]
    order = np.lexsort((part, -np.take_along_axis(scores, part, 1)), axis=1)
    return np.take_along_axis(part, order, 1)


def evaluate_lists(ev: EvalSet, lists: list[list[int]] | np.ndarray, k: int = 10) -> dict:
    """Metrics of ranked item lists, one per evaluated user (shorter lists count misses)."""
    rel = np.zeros((len(ev.users), k))
    for row, (items, relevant) in enumerate(zip(lists, ev.relevant, strict=True)):
        for j, item in enumerate(list(items)[:k]):
            rel[row, j] = float(int(item) in relevant)
    n_rel = np.array([len(r) for r in ev.relevant], dtype=np.float64)
    return {
        f"recall@{k}": float(recall_at_k(rel, n_rel, k)),
        f"precision@{k}": float(precision_at_k(rel, k)),
        f"nDCG@{k}": float(ndcg_at_k(rel, k=k, n_relevant=n_rel)),
        f"MAP@{k}": float(average_precision_at_k(rel, n_rel, k)),
        "users": len(ev.users),
    }


def evaluate_scores(ev: EvalSet, score_fn: Callable[[np.ndarray], np.ndarray], k: int = 10) -> dict:
    """score_fn: (U,) user ids -> (U, n_items) scores; the protocol's candidates are applied."""
    scores = ev.mask_scores(score_fn(ev.users))
    return evaluate_lists(ev, top_k(scores, k), k)
