"""Offline metrics of the book: ranking (MRR, precision/recall@k, mAP, nDCG).

Ranking metrics take ``rel``: a (Q, K) array of relevance gains of each query's ranked list,
best first (0 = not relevant; binary metrics treat any gain > 0 as relevant), and where a metric
needs it ``n_relevant``: (Q,) the number of relevant items each query has in the whole
catalogue. Each returns the mean over queries; ``per_query=True`` returns the (Q,) values.
"""

from __future__ import annotations

import numpy as np


def _as_rel(rel: np.ndarray) -> np.ndarray:
    rel = np.asarray(rel, dtype=np.float64)
    if rel.ndim == 1:
        rel = rel[None, :]
    if rel.ndim != 2:
        raise ValueError(f"rel must be (Q, K), got shape {rel.shape}")
    return rel


def _cut(rel: np.ndarray, k: int | None) -> np.ndarray:
    if k is None:
        return rel
    if k <= 0:
        raise ValueError(f"k must be positive, got {k}")
    return rel[:, :k]


def _mean(values: np.ndarray, per_query: bool) -> np.ndarray | float:
    return values if per_query else float(values.mean()) if len(values) else 0.0


def precision_at_k(rel: np.ndarray, k: int, per_query: bool = False) -> np.ndarray | float:
    """Share of the top k that is relevant (a short list counts its missing slots as misses)."""
    hits = (_cut(_as_rel(rel), k) > 0).sum(axis=1)
    return _mean(hits / k, per_query)


def recall_at_k(
    rel: np.ndarray, n_relevant: np.ndarray, k: int, per_query: bool = False
) -> np.ndarray | float:
    """Share of each query's relevant items found in the top k (queries with none score 0)."""
    hits = (_cut(_as_rel(rel), k) > 0).sum(axis=1)
    n = np.asarray(n_relevant, dtype=np.float64)
    return _mean(np.divide(hits, n, out=np.zeros_like(n), where=n > 0), per_query)


def success_at_k(rel: np.ndarray, k: int, per_query: bool = False) -> np.ndarray | float:
    """Share of queries with at least one relevant item in the top k (hit rate@k)."""
    return _mean((_cut(_as_rel(rel), k) > 0).any(axis=1).astype(np.float64), per_query)


def reciprocal_rank(rel: np.ndarray, k: int | None = None, per_query: bool = False):
    """MRR: 1 / rank of the first relevant item (0 when none in the list or the cut-off)."""
    r = _cut(_as_rel(rel), k) > 0
    first = r.argmax(axis=1)
    found = r.any(axis=1)
    return _mean(np.where(found, 1.0 / (first + 1), 0.0), per_query)


def mrr_from_first_rank(first_rank: np.ndarray) -> float:
    """MRR from 1-based ranks of the first relevant item (0 or less = never found)."""
    fr = np.asarray(first_rank, dtype=np.float64)
    return float(np.where(fr > 0, 1.0 / np.maximum(fr, 1), 0.0).mean())


def average_precision_at_k(
    rel: np.ndarray, n_relevant: np.ndarray, k: int | None = None, per_query: bool = False
):
    """AP@k = (1 / min(k, R)) * sum_{i<=k} P@i * rel_i; with k=None, classic AP over the list."""
    r = (_cut(_as_rel(rel), k) > 0).astype(np.float64)
    ranks = np.arange(1, r.shape[1] + 1)
    prec = np.cumsum(r, axis=1) / ranks
    n = np.asarray(n_relevant, dtype=np.float64)
    denom = n if k is None else np.minimum(n, k)
    ap = np.divide((prec * r).sum(axis=1), denom, out=np.zeros_like(n), where=denom > 0)
    return _mean(ap, per_query)


def dcg(gains: np.ndarray) -> np.ndarray:
    """Discounted cumulative gain of each row: sum gain_i / log2(i + 1)."""
    g = _as_rel(gains)
    return (g / np.log2(np.arange(2, g.shape[1] + 2))).sum(axis=1)


def ndcg_at_k(
    rel: np.ndarray,
    ideal: np.ndarray | None = None,
    k: int = 10,
    n_relevant: np.ndarray | None = None,
    per_query: bool = False,
):
    """nDCG@k with linear gains.

    The ideal ranking is given either as ``ideal``: (Q, >=k) each query's gains sorted
    descending over the whole catalogue, or, for binary relevance, as ``n_relevant``.
    """
    r = _cut(_as_rel(rel), k)
    if ideal is None:
        if n_relevant is None:
            raise ValueError("ndcg_at_k needs ideal gains or n_relevant")
        n = np.asarray(n_relevant)[:, None]
        ideal = (np.arange(k)[None, :] < n).astype(np.float64)
    ideal = _cut(-np.sort(-_as_rel(ideal), axis=1), k)
    idcg = dcg(ideal)
    return _mean(np.divide(dcg(r), idcg, out=np.zeros_like(idcg), where=idcg > 0), per_query)


def ranking_report(
    rel: np.ndarray, n_relevant: np.ndarray, k: int = 10, first_rank: np.ndarray | None = None
) -> dict[str, float]:
    """The book's table for one system: MRR, P@k, R@k, mAP@k, nDCG@k.

    MRR uses ``first_rank`` (1-based rank of the first relevant item over the whole ranking)
    when given, else the ranked list as far as it goes.
    """
    mrr = mrr_from_first_rank(first_rank) if first_rank is not None else reciprocal_rank(rel)
    return {
        "MRR": mrr,
        f"P@{k}": precision_at_k(rel, k),
        f"R@{k}": recall_at_k(rel, n_relevant, k),
        f"mAP@{k}": average_precision_at_k(rel, n_relevant, k),
        f"nDCG@{k}": ndcg_at_k(rel, k=k, n_relevant=n_relevant),
    }
