"""WALS (ours, torch) vs implicit's ALS: seconds per iteration, and WALS on Ray workers.

    python -m bench.wals_speed [--threads 2] [--repeats 3] [--skip-ray] [--only-contended]

Same matrix, same factors, same CG steps (3), same threads, run side by side (alternating)
so machine load hits both. Per-iteration time = (fit with 1 + n iterations - fit with 1) / n,
which removes each library's one-off set-up. Feedback strengths are 1-5 (ratings; the
synthetic draws 1-5) with alpha 1, so confidences c != 1 and the sparse term is really solved
(with binary feedback at alpha 1 ours skips it and is faster still).

Matrices: MovieLens 100K (943 x 1,682, 100k ratings) and synthetic 100K x 20K with planted
low-rank structure at 0.25M / 0.5M / 1M / 2M interactions (how time grows with nnz).
Contended: the 1M matrix again while another process keeps one core busy (a shared node), both
libraries with the same threads. Scaling: WALS on 1 vs 2 Ray workers on the 1M matrix, the
same factors, wall-time ratio.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import time
from pathlib import Path

import numpy as np
import ray
import torch
from threadpoolctl import threadpool_limits

from mlsd.data.movielens import interaction_matrix, load_movielens
from mlsd.recommendation.mf import WALS, WALSConfig
from train.common import init_ray
from train.recommendation_wals import fit_wals_on_ray, planted_low_rank


def time_implicit(X, factors: int, iterations: int, threads: int) -> float:
    from implicit.cpu.als import AlternatingLeastSquares

    m = AlternatingLeastSquares(
        factors=factors,
        regularization=0.05,
        alpha=1.0,
        iterations=iterations,
        num_threads=threads,
        use_cg=True,
        random_state=0,
        calculate_training_loss=False,
    )
    with threadpool_limits(1, "blas"):
        t0 = time.perf_counter()
        m.fit(X, show_progress=False)
        return time.perf_counter() - t0


def time_wals(X, factors: int, iterations: int, threads: int) -> float:
    cfg = WALSConfig(
        factors=factors, reg=0.05, alpha=1.0, iterations=iterations, cg_steps=3, threads=threads
    )
    t0 = time.perf_counter()
    WALS(cfg).fit(X)
    return time.perf_counter() - t0


def per_iteration(fn, X, factors: int, n: int, repeats: int) -> float:
    """Median over repeats of (t(1 + n) - t(1)) / n."""
    out = []
    for _ in range(repeats):
        out.append((fn(X, factors, 1 + n) - fn(X, factors, 1)) / n)
    return float(np.median(out))


def compare(name: str, X, factors: int, n: int, repeats: int, threads: int) -> dict:
    ours, theirs = [], []
    for _ in range(repeats):  # alternate so both see the same machine load
        ours.append(per_iteration(lambda *a: time_wals(*a, threads), X, factors, n, 1))
        theirs.append(per_iteration(lambda *a: time_implicit(*a, threads), X, factors, n, 1))
    o, t = float(np.median(ours)), float(np.median(theirs))
    row = {
        "matrix": name,
        "shape": list(X.shape),
        "nnz": int(X.nnz),
        "factors": factors,
        "wals_s_per_iter": o,
        "implicit_s_per_iter": t,
        "ratio": o / t,
    }
    print(
        f"{name:28s} nnz {X.nnz:>9,d} k {factors:3d}: ours {o:.4f} s/it, implicit {t:.4f} s/it, "
        f"ratio {o / t:.2f}",
        flush=True,
    )
    return row


def _spin(cpu: int) -> None:  # pragma: no cover - runs in the background process
    os.sched_setaffinity(0, {cpu})
    while True:
        pass


class BusyCore:
    """Another process keeping one core busy (what a shared cluster node looks like)."""

    def __init__(self, cpu: int = 0):

        self.proc = mp.get_context("spawn").Process(target=_spin, args=(cpu,), daemon=True)

    def __enter__(self):
        self.proc.start()
        time.sleep(0.5)
        return self

    def __exit__(self, *exc):
        self.proc.terminate()
        self.proc.join(5)


def ray_scaling(X, factors: int, iterations: int, cpus: int) -> dict:

    init_ray(cpus)
    cfg = WALSConfig(factors=factors, reg=0.05, alpha=1.0, iterations=iterations)
    res = {}
    for workers in (1, 2):
        t0 = time.perf_counter()
        m = fit_wals_on_ray(WALS(cfg), X, workers=workers, cpus_per_worker=cpus / workers)
        res[workers] = (time.perf_counter() - t0, m.user_factors, m.item_factors)
    ray.shutdown()
    diff = max(
        float(np.abs(res[1][1] - res[2][1]).max()), float(np.abs(res[1][2] - res[2][2]).max())
    )
    row = {
        "matrix": "synthetic 100K x 20K",
        "nnz": int(X.nnz),
        "iterations": iterations,
        "seconds_1_worker": res[1][0],
        "seconds_2_workers": res[2][0],
        "ratio_2_over_1": res[2][0] / res[1][0],
        "max_abs_factor_diff": diff,
    }
    print(
        f"Ray WALS {iterations} it: 1 worker {res[1][0]:.2f} s, 2 workers {res[2][0]:.2f} s "
        f"(ratio {res[2][0] / res[1][0]:.2f}), max |factor diff| {diff:.2e}",
        flush=True,
    )
    return row


def main(argv: list[str] | None = None) -> None:

    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--iterations", type=int, default=3, help="timed iterations per fit")
    p.add_argument("--nnz", type=int, nargs="+", default=[250_000, 500_000, 1_000_000, 2_000_000])
    p.add_argument("--skip-ray", action="store_true")
    p.add_argument("--skip-contended", action="store_true")
    p.add_argument("--only-contended", action="store_true", help="just the contended 1M row")
    p.add_argument("--out", default="var/bench/wals_speed.json")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    rows = []
    synth = {}
    if not a.only_contended:
        ml = load_movielens()
        X = interaction_matrix(ml.ratings, ml.n_users, ml.n_items, "rating")
        for k in (64, 128):
            rows.append(compare("MovieLens 100K", X, k, 5, a.repeats, a.threads))
        for nnz in a.nnz:
            synth[nnz] = planted_low_rank(100_000, 20_000, nnz, seed=0)
            for k in (64, 128) if nnz == 1_000_000 else (64,):
                rows.append(
                    compare(
                        "synthetic 100K x 20K", synth[nnz], k, a.iterations, a.repeats, a.threads
                    )
                )
    if not a.skip_contended and len(os.sched_getaffinity(0)) > 1:
        X1 = synth.get(1_000_000)
        if X1 is None:
            X1 = synth[1_000_000] = planted_low_rank(100_000, 20_000, 1_000_000, seed=0)
        with BusyCore(min(os.sched_getaffinity(0))):  # both libraries, same conditions
            rows.append(
                compare("synthetic, one core busy", X1, 64, a.iterations, a.repeats, a.threads)
            )
    scaling = None
    if not a.skip_ray:
        scaling = ray_scaling(synth.get(1_000_000, next(iter(synth.values()))), 64, 5, a.threads)
    Path(os.path.dirname(a.out) or ".").mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps({"speed": rows, "ray_scaling": scaling}, indent=2))
    print("\n| matrix | nnz | factors | ours s/iter | implicit s/iter | ratio |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(
            f"| {r['matrix']} | {r['nnz']:,} | {r['factors']} | {r['wals_s_per_iter']:.4f} "
            f"| {r['implicit_s_per_iter']:.4f} | {r['ratio']:.2f} |"
        )


if __name__ == "__main__":
    main()
