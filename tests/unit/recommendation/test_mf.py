"""WALS (issue 3's candidate generation core): exact vs CG solves, monotone loss, block splits."""

import numpy as np
import pytest
import scipy.sparse as sp
import torch

import mlsd.recommendation.mf as mf
from mlsd.recommendation.mf import (
    WALS,
    LocalBlockSolver,
    RowBlock,
    WALSConfig,
    confidence_matrix,
    sgd_mf,
    solve_rows,
    split_rows,
    split_rows_by_nnz,
)


def _feedback(n_users=60, n_items=40, rank=3, density=0.15, seed=0):
    rng = np.random.default_rng(seed)
    u, v = rng.normal(size=(n_users, rank)), rng.normal(size=(n_items, rank))
    score = u @ v.T + 0.3 * rng.normal(size=(n_users, n_items))
    cut = np.quantile(score, 1 - density)
    r = np.where(score > cut, rng.integers(1, 6, score.shape), 0).astype(np.float32)
    return sp.csr_matrix(r)


def test_cg_converges_to_the_exact_solve():
    fb = _feedback()
    conf = confidence_matrix(fb, alpha=2.0)
    g = torch.Generator().manual_seed(0)
    Y = torch.rand(fb.shape[1], 8, generator=g)
    block = RowBlock(conf)
    exact = solve_rows(block, Y, Y.T @ Y, 0.1, solver="cholesky")
    cg = solve_rows(block, Y, Y.T @ Y, 0.1, solver="cg", cg_steps=30)
    assert torch.allclose(cg, exact, atol=1e-4)


def test_exact_wals_loss_never_increases():
    fb = _feedback()
    losses = []
    model = WALS(WALSConfig(factors=8, reg=0.1, alpha=2.0, iterations=1, solver="cholesky"))
    X, Y = model.init_factors(*fb.shape)
    conf = confidence_matrix(fb, 2.0)
    users, items = RowBlock(conf), RowBlock(conf.T.tocsr())
    for _ in range(6):
        X = solve_rows(users, Y, Y.T @ Y, 0.1, solver="cholesky")
        Y = solve_rows(items, X, X.T @ X, 0.1, solver="cholesky")
        model.user_factors, model.item_factors = X.numpy(), Y.numpy()
        losses.append(model.loss(fb))
    assert all(b <= a + 1e-3 for a, b in zip(losses, losses[1:], strict=False)), losses


def test_row_blocks_give_the_same_factors_as_one_block():
    fb = _feedback(n_users=90)
    conf = confidence_matrix(fb, 1.0)
    Y = torch.rand(fb.shape[1], 6, generator=torch.Generator().manual_seed(1))
    whole = solve_rows(RowBlock(conf), Y, Y.T @ Y, 0.05, cg_steps=3)
    parts = torch.cat(
        [
            solve_rows(RowBlock(conf[a:b]), Y, Y.T @ Y, 0.05, cg_steps=3)
            for a, b in split_rows(90, 4)
        ]
    )
    assert torch.allclose(whole, parts, atol=1e-5)


def test_wals_ranks_held_out_items_above_chance():
    fb = _feedback(n_users=120, n_items=80, density=0.2, seed=3).tolil()
    rng = np.random.default_rng(0)
    held = []
    for u in range(fb.shape[0]):
        items = fb.rows[u]
        if len(items) >= 3:
            i = items[rng.integers(len(items))]
            held.append((u, i))
            fb[u, i] = 0
    train = fb.tocsr()
    model = WALS(WALSConfig(factors=8, reg=0.1, alpha=5.0, iterations=10)).fit(train)
    scores = model.user_factors @ model.item_factors.T
    scores[train.nonzero()] = -np.inf
    hits = np.mean([i in np.argsort(-scores[u])[:10] for u, i in held])
    assert hits > 2 * 10 / train.shape[1]  # well above random top-10


def test_sgd_variant_runs_and_learns():
    fb = _feedback()
    X, Y = sgd_mf(fb, factors=8, epochs=30, lr=0.05)
    pred = X @ Y.T
    obs = fb.toarray() > 0
    assert pred[obs].mean() > pred[~obs].mean()


def test_bad_solver():
    fb = _feedback()
    with pytest.raises(ValueError):
        solve_rows(
            RowBlock(confidence_matrix(fb, 1.0)), torch.ones(40, 2), torch.eye(2), 0.1, solver="qr"
        )


def test_block_solver_with_several_blocks_matches_one_block():
    fb = _feedback(n_users=70, n_items=50)
    cfg = WALSConfig(factors=6, reg=0.1, alpha=3.0, iterations=4)
    conf = confidence_matrix(fb, cfg.alpha)
    one = WALS(cfg).fit(fb)
    many = WALS(cfg).fit(fb, solver=LocalBlockSolver(conf, blocks=5))
    np.testing.assert_allclose(one.user_factors, many.user_factors, atol=1e-5)
    np.testing.assert_allclose(one.item_factors, many.item_factors, atol=1e-5)


def test_fold_in_reproduces_the_exact_user_solve():
    fb = _feedback()
    cfg = WALSConfig(factors=5, reg=0.2, alpha=2.0, iterations=3, solver="cholesky")
    model = WALS(cfg).fit(fb)
    conf = confidence_matrix(fb, cfg.alpha)
    Y = torch.as_tensor(model.item_factors)
    exact = solve_rows(RowBlock(conf[7:8]), Y, Y.T @ Y, cfg.reg, solver="cholesky")[0].numpy()
    row = fb[7]
    x = model.fold_in(row.indices, row.data)
    np.testing.assert_allclose(x, exact, rtol=1e-4, atol=1e-5)


def test_binary_feedback_with_alpha_one_skips_the_sparse_term_and_still_solves():
    fb = (_feedback() > 0).astype(np.float32)
    block = RowBlock(confidence_matrix(fb, 1.0))
    assert not block.sparse_term
    Y = torch.rand(fb.shape[1], 4, generator=torch.Generator().manual_seed(0))
    exact = solve_rows(block, Y, Y.T @ Y, 0.1, solver="cholesky")
    cg = solve_rows(block, Y, Y.T @ Y, 0.1, solver="cg", cg_steps=10)
    assert torch.allclose(exact, cg, atol=1e-4)


def test_split_rows_by_nnz_covers_rows_with_bounded_chunks():
    indptr = np.array([0, 2, 2, 10, 11, 12, 13, 30])  # row 2 has 8 nnz, row 6 has 17
    parts = split_rows_by_nnz(indptr, max_nnz=4, max_rows=2)
    assert parts[0][0] == 0 and parts[-1][1] == 7
    assert all(b == c for (_, b), (c, _) in zip(parts, parts[1:], strict=False))
    for a, b in parts:
        assert b - a <= 2 and (indptr[b] - indptr[a] <= 4 or b - a == 1)


def test_cache_sized_chunks_give_the_same_factors(monkeypatch):

    monkeypatch.setattr(mf, "CHUNK_MIN_DIM", 0)  # force chunking on a small matrix
    fb = _feedback(n_users=80, n_items=50)
    cfg = WALSConfig(factors=6, reg=0.1, alpha=3.0, iterations=3)
    conf = confidence_matrix(fb, cfg.alpha)
    chunked = LocalBlockSolver(conf, blocks=1, chunk_nnz=40)
    assert len(chunked.sides["users"]) > 5
    one = WALS(cfg).fit(fb, solver=LocalBlockSolver(conf, chunk_nnz=None))
    many = WALS(cfg).fit(fb, solver=chunked)
    np.testing.assert_allclose(one.user_factors, many.user_factors, atol=1e-5)
    np.testing.assert_allclose(one.item_factors, many.item_factors, atol=1e-5)


@pytest.mark.parametrize("chunked", [False, True])
def test_factors_do_not_depend_on_the_thread_count(monkeypatch, chunked):
    """Each chunk is solved with single-threaded kernels, and chunks are shared out to the
    threads: 1 or 2 threads (or Ray workers) give bit-identical factors."""

    monkeypatch.setattr(mf, "CHUNK_MIN_DIM", 0)
    fb = _feedback(n_users=120, n_items=70)
    runs = []
    for threads in (1, 2):
        cfg = WALSConfig(factors=6, iterations=3, threads=threads)
        solver = LocalBlockSolver(
            confidence_matrix(fb, cfg.alpha), chunk_nnz=40 if chunked else None
        )
        assert (len(solver.sides["users"]) > 4) == chunked
        runs.append(WALS(cfg).fit(fb, solver=solver))
    assert np.array_equal(runs[0].user_factors, runs[1].user_factors)
    assert np.array_equal(runs[0].item_factors, runs[1].item_factors)
