"""Candidate generation: WALS user.item top-N through the faiss index, with cold start.

Strategies, in order: ``personal`` (a trained user factor, refreshed by folding in any
interactions logged since training), ``fold_in`` (a user unseen at training time who has
logged interactions: one exact WALS row solve), ``demographic`` (known demographics, no
history: popularity among users of the same age group and gender), ``popular`` (anything
else, including unknown ids). Never an error for a well-formed id.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from mlsd.index import IndexConfig, VectorIndex
from mlsd.recommendation.features import RecTables
from mlsd.recommendation.mf import fold_in


@dataclass
class Candidates:
    items: np.ndarray  # (n,) item ids, best first
    scores: np.ndarray  # (n,) generator scores
    strategy: str


def demographic_popularity(train: pd.DataFrame, tables: RecTables) -> np.ndarray:
    """(N_AGE * N_GENDER, I) interaction counts per (age bucket, gender) group."""
    groups = tables.age_bucket[train.user_id] * 3 + tables.gender[train.user_id]
    out = np.zeros((int(tables.age_bucket.max() + 1) * 3, tables.n_items), np.float32)
    np.add.at(out, (groups, train.item_id.to_numpy()), 1.0)
    return out


class CandidateGenerator:
    def __init__(
        self,
        user_factors: np.ndarray,  # (U, k)
        item_factors: np.ndarray,  # (I, k)
        catalogue: np.ndarray,  # (I,) bool: items that may be recommended
        tables: RecTables,
        demo_pop: np.ndarray,  # (G, I)
        trained_users: np.ndarray,  # (U,) bool: users with a trained factor
        reg: float,
        alpha: float,
        index_cfg: IndexConfig | None = None,
    ):
        self.user_factors, self.item_factors = user_factors, item_factors
        self.tables, self.demo_pop, self.trained_users = tables, demo_pop, trained_users
        self.reg, self.alpha = reg, alpha
        self.catalogue = np.asarray(catalogue, bool)  # (I,)
        self.catalogue_items = np.flatnonzero(catalogue)
        self.index = VectorIndex.build(
            item_factors[self.catalogue_items], self.catalogue_items, index_cfg
        )
        pop = tables.popularity * catalogue
        self.popular = np.argsort(-pop, kind="stable")[: int(catalogue.sum())]

    def _search(self, q: np.ndarray, n: int, exclude: set[int]) -> tuple[np.ndarray, np.ndarray]:
        fetch = min(n + len(exclude), len(self.catalogue_items))
        scores, ids = self.index.search(q[None].astype(np.float32), fetch)
        keep = [
            (i, s) for i, s in zip(ids[0], scores[0], strict=True) if i >= 0 and i not in exclude
        ]
        keep = keep[:n]
        return np.array([i for i, _ in keep], np.int64), np.array([s for _, s in keep], np.float32)

    def _popular(self, order: np.ndarray, counts: np.ndarray, n: int, exclude: set[int]):
        items = np.array([i for i in order[: n + len(exclude)] if i not in exclude][:n], np.int64)
        c = counts[items]
        return items, (c / max(float(c.max()), 1.0) if len(c) else c).astype(np.float32)

    def generate(
        self,
        user_id: int,
        n: int,
        history: np.ndarray | None = None,  # (h,) items watched (training + logged)
        fresh: np.ndarray | None = None,  # (f,) items logged since training
        trained: bool = True,  # False: the user's trained factor is not to be used
    ) -> Candidates:
        history = np.zeros(0, np.int64) if history is None else np.asarray(history, np.int64)
        fresh = np.zeros(0, np.int64) if fresh is None else np.asarray(fresh, np.int64)
        exclude = set(history.tolist()) | set(fresh.tolist())
        known = (
            trained and 0 <= user_id < len(self.trained_users) and bool(self.trained_users[user_id])
        )
        valid = np.array(sorted(exclude), np.int64)
        valid = valid[(valid >= 0) & (valid < len(self.item_factors))]
        if known and len(fresh) == 0:
            items, scores = self._search(self.user_factors[user_id], n, exclude)
            return Candidates(items, scores, "personal")
        if len(valid):
            q = fold_in(self.item_factors, valid, None, self.reg, self.alpha)
            items, scores = self._search(q, n, exclude)
            return Candidates(items, scores, "personal" if known else "fold_in")
        if 0 <= user_id < self.tables.n_users and self.tables.age_bucket[user_id] > 0:
            g = self.tables.age_bucket[user_id] * 3 + self.tables.gender[user_id]
            counts = self.demo_pop[g] + 0.1 * self.tables.popularity  # smoothed to global
            counts = counts * self.catalogue
            order = np.argsort(-counts, kind="stable")
            items, scores = self._popular(order, counts, n, exclude)
            return Candidates(items, scores, "demographic")
        items, scores = self._popular(self.popular, self.tables.popularity, n, exclude)
        return Candidates(items, scores, "popular")

    def generate_batch(self, users: np.ndarray, n: int, seen: list[np.ndarray]) -> list[Candidates]:
        """Personal candidates for many trained users at once (training and evaluation)."""
        fetch = min(n + max((len(s) for s in seen), default=0), len(self.catalogue_items))
        scores, ids = self.index.search(self.user_factors[users].astype(np.float32), fetch)
        out = []
        for row, s in enumerate(seen):
            keep = (ids[row] >= 0) & ~np.isin(ids[row], s)
            out.append(Candidates(ids[row][keep][:n], scores[row][keep][:n], "personal"))
        return out
