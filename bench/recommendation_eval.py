"""The recommendation evaluation table (ANCHORS.md protocol) on MovieLens 100K.

    python -m bench.recommendation_eval [--splits temporal random] [--seeds 3]

Rows: popularity, implicit's ALS (the anchor), our WALS, the SGD variant, and the two-stage
system (WALS candidates -> ranking model -> reranking). WALS hyper-parameters are chosen on a
validation split cut from train by the same protocol, and implicit's ALS gets the very same
factors / iterations / regularisation / alpha; the book's default setting is reported too.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from mlsd.data.movielens import SPLITS, interaction_matrix, load_movielens
from mlsd.models.mf import WALS, WALSConfig, sgd_mf
from mlsd.recommendation.evaluation import EvalSet, evaluate_lists, evaluate_scores
from mlsd.recommendation.pipeline import (
    RankerTrainConfig,
    RecSettings,
    TwoStage,
    fit_candidate_generator,
    ranker_examples,
    train_ranker,
)
from mlsd.recommendation.rerank import RecRerankConfig

GRID = [(f, r, a) for f in (64,) for r in (0.05, 1.0, 10.0, 30.0) for a in (0.5, 1.0, 2.0)]


def implicit_als(X, cfg: WALSConfig, threads: int):
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


def run_split(ml, emb, split: str, seeds: int, threads: int) -> list[dict]:
    train, test = SPLITS[split](ml.ratings)
    ev = EvalSet.build(train, test, ml.n_items)
    X = interaction_matrix(train, ml.n_users, ml.n_items)
    rows = []

    def add(name, metrics, **extra):
        rows.append({"split": split, "model": name, **metrics, **extra})
        print(f"  {name:48s} nDCG@10 {metrics['nDCG@10']:.4f}", flush=True)

    pop = np.asarray(X.sum(0)).ravel()
    add("popularity", evaluate_scores(ev, lambda u: np.tile(pop, (len(u), 1))))
    default = WALSConfig(factors=64, reg=0.05, alpha=1.0, iterations=15)
    chosen, grid = choose_wals(ml, train, split)
    print(f"  chosen on validation: {chosen.factors} factors, reg {chosen.reg}, "
          f"alpha {chosen.alpha}", flush=True)  # fmt: skip
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
            ts = TwoStage(cg, tables, history, model, st)
            per_seed.append(evaluate_lists(ev, ts.recommend(ev.users, ev.request_ts, 10)))
        mean = {k: float(np.mean([m[k] for m in per_seed])) for k in per_seed[0]}
        std = float(np.std([m["nDCG@10"] for m in per_seed]))
        name = "WALS + ranking + reranking" + (f" (genre cap {cap})" if cap else "")
        add(name, mean, nDCG_std=std, seeds=seeds)
    rows[-1]["validation_grid"] = grid
    return rows


def table(rows: list[dict]) -> str:
    out = [
        "| split | model | recall@10 | precision@10 | nDCG@10 | MAP@10 |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        nd = f"{r['nDCG@10']:.4f}" + (f" ± {r['nDCG_std']:.4f}" if "nDCG_std" in r else "")
        out.append(
            f"| {r['split']} | {r['model']} | {r['recall@10']:.4f} | {r['precision@10']:.4f} "
            f"| {nd} | {r['MAP@10']:.4f} |"
        )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--splits", nargs="+", default=["temporal", "random"], choices=list(SPLITS))
    p.add_argument("--seeds", type=int, default=3, help="ranker seeds averaged")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--text-model", default="offline:all-MiniLM-L6-v2")
    p.add_argument("--out", default="var/bench/recommendation_eval.json")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    from train.recommendation import title_embeddings

    t0 = time.perf_counter()
    ml = load_movielens()
    emb = title_embeddings(ml, a.text_model)
    rows = []
    for split in a.splits:
        print(f"{split} split", flush=True)
        rows += run_split(ml, emb, split, a.seeds, a.threads)
    print()
    print(table(rows))
    print(f"\n{time.perf_counter() - t0:.0f} s")
    Path(os.path.dirname(a.out) or ".").mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
