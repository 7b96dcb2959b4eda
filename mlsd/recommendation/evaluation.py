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
from threadpoolctl import threadpool_limits

from mlsd.data.movielens import SPLITS, interaction_matrix
from mlsd.metrics import average_precision_at_k, ndcg_at_k, precision_at_k, recall_at_k
from mlsd.recommendation.mf import WALS, WALSConfig, sgd_mf
from mlsd.recommendation.pipeline import (
    Ranker,
    RankerTrainConfig,
    RecSettings,
    TwoStage,
    fit_candidate_generator,
    ranker_examples,
    train_ranker,
)
from mlsd.recommendation.rerank import RecRerankConfig


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


# the evaluation table (bench.recommendation_eval prints it) ---------------------------------
GRID = [(f, r, a) for f in (64,) for r in (0.05, 1.0, 10.0, 30.0) for a in (0.5, 1.0, 2.0)]


def implicit_als(X, cfg: WALSConfig, threads: int):
    """The anchor: implicit's ALS with the very same factors / iterations / reg / alpha."""
    from implicit.cpu.als import AlternatingLeastSquares

    m = AlternatingLeastSquares(
        factors=cfg.factors,
        regularization=cfg.reg,
        alpha=cfg.alpha,
        iterations=cfg.iterations,
        num_threads=threads,
        random_state=cfg.seed,
        calculate_training_loss=False,
    )

    with threadpool_limits(1, "blas"):  # implicit's own advice for its thread pool
        m.fit(X, show_progress=False)
    return m.user_factors, m.item_factors


def wals_scores(ml, train, cfg: WALSConfig):
    X = interaction_matrix(train, ml.n_users, ml.n_items)
    m = WALS(cfg).fit(X)
    return lambda u: m.user_factors[u] @ m.item_factors.T


def choose_wals(ml, train, split: str) -> tuple[WALSConfig, dict]:
    """Grid on a validation split cut from train by the same protocol."""
    fit, val = SPLITS[split](train)
    ev = EvalSet.build(fit, val, ml.n_items)
    results = {}
    for f, r, a in GRID:
        cfg = WALSConfig(factors=f, reg=r, alpha=a, iterations=15)
        results[(f, r, a)] = evaluate_scores(ev, wals_scores(ml, fit, cfg))["nDCG@10"]
    f, r, a = max(results, key=results.get)
    return WALSConfig(factors=f, reg=r, alpha=a, iterations=15), {
        str(k): round(v, 4) for k, v in results.items()
    }


def run_split(
    ml, emb, split: str, seeds: int, threads: int, log: Callable[[str], None] = print
) -> list[dict]:
    """The table's rows for one split: popularity, implicit ALS vs our WALS (default and
    validation-tuned), SGD MF, and the two-stage system over ranker seeds."""
    train, test = SPLITS[split](ml.ratings)
    ev = EvalSet.build(train, test, ml.n_items)
    X = interaction_matrix(train, ml.n_users, ml.n_items)
    rows = []

    def add(name, metrics, **extra):
        rows.append({"split": split, "model": name, **metrics, **extra})
        log(f"  {name:48s} nDCG@10 {metrics['nDCG@10']:.4f}")

    pop = np.asarray(X.sum(0)).ravel()
    add("popularity", evaluate_scores(ev, lambda u: np.tile(pop, (len(u), 1))))
    default = WALSConfig(factors=64, reg=0.05, alpha=1.0, iterations=15)
    chosen, grid = choose_wals(ml, train, split)
    log(f"  chosen on validation: {chosen.factors} factors, reg {chosen.reg}, alpha {chosen.alpha}")
    for label, cfg in (("default", default), ("tuned", chosen)):
        setting = f"{cfg.factors}f reg {cfg.reg} alpha {cfg.alpha} {cfg.iterations} it"
        U, V = implicit_als(X, cfg, threads)
        add(
            f"implicit ALS ({label}: {setting})",
            evaluate_scores(ev, lambda u, U=U, V=V: U[u] @ V.T),
        )
        add(f"WALS, ours ({label}: {setting})", evaluate_scores(ev, wals_scores(ml, train, cfg)))
    U, V = sgd_mf(X, factors=64, epochs=30, lr=0.01, reg=0.01, alpha=1.0, seed=0)
    add("MF by SGD (64f, 30 epochs)", evaluate_scores(ev, lambda u, U=U, V=V: U[u] @ V.T))

    settings = RecSettings(wals=chosen, example_split=split)
    cg, tables, history = fit_candidate_generator(ml, train, emb, settings)
    ex = ranker_examples(ml, train, emb, settings)
    for cap in (0, 3):
        per_seed = []
        for seed in range(seeds):
            cfg = RankerTrainConfig(seed=seed)
            model = train_ranker(ex, cfg)
            st = RecSettings(
                wals=chosen, ranker=cfg, rerank=RecRerankConfig(genre_cap=cap), example_split=split
            )
            ts = TwoStage(cg, tables, history, Ranker.torch(model, tables, device="cpu"), st)
            per_seed.append(evaluate_lists(ev, ts.recommend(ev.users, ev.request_ts, 10)))
        mean = {k: float(np.mean([m[k] for m in per_seed])) for k in per_seed[0]}
        std = float(np.std([m["nDCG@10"] for m in per_seed]))
        name = "WALS + ranking + reranking" + (f" (genre cap {cap})" if cap else "")
        add(name, mean, nDCG_std=std, seeds=seeds)
    rows[-1]["validation_grid"] = grid
    return rows
