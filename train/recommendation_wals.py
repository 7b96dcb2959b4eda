"""WALS distributed with Ray: the row blocks of each side are solved in parallel by actors.

Each :class:`WALSWorker` holds its blocks of the confidence matrix (both sides) for the whole
run; per half-step the driver puts the fixed factors in the object store once, every worker
solves its rows with :func:`mlsd.recommendation.mf.solve_rows` (the same function the
in-process solver calls on the same blocks), and the driver concatenates. So 1 or N
workers give the same factors, and a matrix whose rows do not fit one machine's solve memory
spreads over nodes.

Run alone as a benchmark-style job: ``python -m train.recommendation_wals --workers 2``
(synthetic or MovieLens), or use :class:`RayBlockSolver` from ``train.recommendation``.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import ray
import scipy.sparse as sp
import torch

from mlsd.recommendation.mf import (
    WALS,
    WALSConfig,
    chunk_rows,
    confidence_matrix,
    solve_chunks,
    split_rows,
)
from train.common import init_ray


@ray.remote
class WALSWorker:
    def __init__(self, blocks: dict, device: str = "cpu", threads: int = 1):
        self.threads = max(1, threads)
        torch.set_num_threads(self.threads)
        # side -> (first row, cache-sized chunks of this worker's rows)
        self.sides = {
            side: (a, [((a + s, a + e), blk) for (s, e), blk in chunk_rows(m, 1, device)])
            for side, ((a, _), m) in blocks.items()
        }
        self.device = device

    def solve(self, side: str, Y: np.ndarray, X0: np.ndarray, cfg: dict) -> np.ndarray:
        a, chunks = self.sides[side]
        (_, b) = chunks[-1][0]
        Yt = torch.as_tensor(np.array(Y), device=self.device)  # writable copy of the shared array
        x0 = torch.as_tensor(np.array(X0[a:b]), device=self.device)
        x = solve_chunks(chunks, Yt, x0, WALSConfig(**cfg), offset=a, threads=self.threads)
        return x.cpu().numpy()


class RayBlockSolver:
    """Drop-in for ``LocalBlockSolver``: one block of users and one of items per worker."""

    def __init__(
        self,
        conf: sp.csr_matrix,
        workers: int = 2,
        cpus_per_worker: float = 1.0,
        gpus_per_worker: float = 0.0,
    ):
        conf = sp.csr_matrix(conf)
        conf_t = sp.csr_matrix(conf.T)
        u_parts, i_parts = split_rows(conf.shape[0], workers), split_rows(conf.shape[1], workers)
        device = "cuda" if gpus_per_worker > 0 else "cpu"
        threads = max(1, int(cpus_per_worker))
        self.workers = [
            WALSWorker.options(num_cpus=cpus_per_worker, num_gpus=gpus_per_worker).remote(
                {"users": (u, conf[u[0] : u[1]]), "items": (i, conf_t[i[0] : i[1]])},
                device,
                threads,
            )
            for u, i in zip(u_parts, i_parts, strict=True)
        ]

    def solve(self, side: str, Y: torch.Tensor, X0: torch.Tensor, cfg: WALSConfig) -> torch.Tensor:
        y_ref, x_ref = ray.put(Y.cpu().numpy()), ray.put(X0.cpu().numpy())
        params = cfg.to_dict()
        parts = ray.get([w.solve.remote(side, y_ref, x_ref, params) for w in self.workers])
        return torch.as_tensor(np.concatenate(parts)).to(Y.device)

    def close(self) -> None:
        for w in self.workers:
            ray.kill(w)


def fit_wals_on_ray(
    model: WALS, feedback: sp.spmatrix, workers: int = 2, cpus_per_worker: float = 1.0
) -> WALS:
    conf = confidence_matrix(feedback, model.cfg.alpha)
    solver = RayBlockSolver(conf, workers, cpus_per_worker)
    try:
        return model.fit(feedback, solver=solver)
    finally:
        solver.close()


def planted_low_rank(
    n_users: int, n_items: int, nnz: int, rank: int = 16, seed: int = 0
) -> sp.csr_matrix:
    """Synthetic implicit feedback with planted low-rank structure: each user draws items with
    probability ~ softmax(u.v) (popularity-skewed), strengths 1-5."""
    rng = np.random.default_rng(seed)
    U = rng.normal(size=(n_users, rank)).astype(np.float32) / np.sqrt(rank)
    V = rng.normal(size=(n_items, rank)).astype(np.float32)
    per_user = np.maximum(1, rng.poisson(nnz / n_users, n_users))
    rows, cols = [], []
    for s in range(0, n_users, 2048):
        logits = U[s : s + 2048] @ V.T * 2.0  # (b, n_items)
        p = np.exp(logits - logits.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        cum = np.cumsum(p, axis=1)
        for j, row in enumerate(cum):
            k = per_user[s + j]
            cols.append(np.searchsorted(row, rng.random(k) * row[-1]))
            rows.append(np.full(k, s + j))
    r, c = np.concatenate(rows), np.minimum(np.concatenate(cols), n_items - 1)
    m = sp.csr_matrix(
        (rng.integers(1, 6, len(r)).astype(np.float32), (r, c)), shape=(n_users, n_items)
    )
    m.sum_duplicates()
    return m


def main(argv: list[str] | None = None) -> None:

    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--cpus-per-worker", type=float, default=1.0)
    p.add_argument("--users", type=int, default=100_000)
    p.add_argument("--items", type=int, default=20_000)
    p.add_argument("--nnz", type=int, default=1_000_000)
    p.add_argument("--factors", type=int, default=64)
    p.add_argument("--iterations", type=int, default=5)
    p.add_argument("--num-cpus", type=int, default=None)
    a = p.parse_args(argv)
    init_ray(a.num_cpus)
    fb = planted_low_rank(a.users, a.items, a.nnz)
    cfg = WALSConfig(factors=a.factors, iterations=a.iterations, reg=0.05, alpha=1.0)
    t0 = time.perf_counter()
    model = fit_wals_on_ray(WALS(cfg), fb, a.workers, a.cpus_per_worker)
    print(
        json.dumps(
            {
                "nnz": int(fb.nnz),
                "workers": a.workers,
                "seconds": time.perf_counter() - t0,
                "user_factors_norm": float(np.linalg.norm(model.user_factors)),
            }
        )
    )


if __name__ == "__main__":
    main()
