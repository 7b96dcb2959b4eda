"""Ranking metrics checked against scikit-learn and against brute-force definitions."""

import numpy as np
import pytest
from sklearn.metrics import (
    average_precision_score,
    label_ranking_average_precision_score,
    ndcg_score,
)

from mlsd import metrics as M


def _random_case(rng, n_items=40, graded=False):
    scores = rng.permutation(n_items).astype(float)  # distinct scores: no tie conventions
    if graded:
        truth = rng.integers(0, 4, n_items).astype(float)
    else:
        truth = (rng.random(n_items) < 0.3).astype(float)
    if truth.sum() == 0:
        truth[rng.integers(n_items)] = 1.0
    order = np.argsort(-scores)
    return scores, truth, truth[order]


@pytest.mark.parametrize("seed", range(25))
def test_ndcg_matches_sklearn(seed):
    rng = np.random.default_rng(seed)
    scores, truth, ranked = _random_case(rng, graded=True)
    for k in (1, 5, 10, 40):
        ours = M.ndcg_at_k(ranked[None], ideal=truth[None], k=k)
        ref = ndcg_score(truth[None], scores[None], k=k)
        assert ours == pytest.approx(ref, abs=1e-12)


@pytest.mark.parametrize("seed", range(25))
def test_full_average_precision_matches_sklearn(seed):
    rng = np.random.default_rng(seed)
    scores, truth, ranked = _random_case(rng)
    ours = M.average_precision_at_k(ranked[None], np.array([truth.sum()]), k=None)
    assert ours == pytest.approx(average_precision_score(truth, scores), abs=1e-12)


@pytest.mark.parametrize("seed", range(25))
def test_cut_metrics_match_definitions(seed):
    rng = np.random.default_rng(seed)
    q = 7
    ranked = (rng.random((q, 30)) < 0.35).astype(float)
    n_rel = ranked.sum(1).astype(int) + rng.integers(0, 5, q)  # some relevant items unranked
    k = 10
    p, r, ap, rr = [], [], [], []
    for row, n in zip(ranked, n_rel, strict=True):
        top = row[:k]
        p.append(top.sum() / k)
        r.append(top.sum() / n if n else 0.0)
        hits, s = 0, 0.0
        for i, v in enumerate(top, start=1):
            if v:
                hits += 1
                s += hits / i
        ap.append(s / min(k, n) if n else 0.0)
        first = np.flatnonzero(row)
        rr.append(1.0 / (first[0] + 1) if len(first) else 0.0)
    assert M.precision_at_k(ranked, k) == pytest.approx(np.mean(p))
    assert M.recall_at_k(ranked, n_rel, k) == pytest.approx(np.mean(r))
    assert M.average_precision_at_k(ranked, n_rel, k) == pytest.approx(np.mean(ap))
    assert M.reciprocal_rank(ranked) == pytest.approx(np.mean(rr))


def test_mrr_single_relevant_matches_sklearn_lrap():

    rng = np.random.default_rng(0)
    truth = np.zeros((20, 15))
    truth[np.arange(20), rng.integers(0, 15, 20)] = 1
    scores = rng.random((20, 15))
    order = np.argsort(-scores, axis=1)
    ranked = np.take_along_axis(truth, order, axis=1)
    assert M.reciprocal_rank(ranked) == pytest.approx(
        label_ranking_average_precision_score(truth, scores)
    )


def test_binary_ndcg_with_n_relevant_equals_explicit_ideal():
    ranked = np.array([[1, 0, 1, 0, 0], [0, 0, 0, 0, 1]], dtype=float)
    n_rel = np.array([3, 1])
    ideal = np.array([[1, 1, 1, 0, 0], [1, 0, 0, 0, 0]], dtype=float)
    assert M.ndcg_at_k(ranked, k=5, n_relevant=n_rel) == pytest.approx(
        M.ndcg_at_k(ranked, ideal=ideal, k=5)
    )


def test_bad_k_is_rejected():
    with pytest.raises(ValueError):
        M.precision_at_k(np.ones((1, 3)), 0)
