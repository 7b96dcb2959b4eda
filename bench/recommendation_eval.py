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

import torch

from mlsd.data.movielens import SPLITS, load_movielens
from mlsd.recommendation.evaluation import run_split
from train.recommendation import title_embeddings


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
