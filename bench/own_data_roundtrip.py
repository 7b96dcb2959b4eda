"""The demo sets through the documented "your own data" formats: same data, same figures?

``--system harmful``: every Davidson and MLMA post of the demo's fixed splits is written out as
a posts CSV (``mlsd.harmful_content.data.write_posts``: post_id, text, lang, split, one column
per head), then the training job runs twice with the same settings and seed: once through
the data sets' own readers, once through ``--posts`` on that CSV. Both models are scored on
the same test rows (each head, each language) and the AUROCs compared.

``--system recommendation``: MovieLens 100K through the interactions / items / users tables.

    python -m bench.own_data_roundtrip --system harmful --epochs 6
    python -m bench.own_data_roundtrip --system recommendation
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile

import numpy as np
import ray
import torch

from mlsd.artifacts import ArtifactStore
from mlsd.data.movielens import load_movielens
from mlsd.harmful_content import data as D
from mlsd.harmful_content import features as F
from mlsd.harmful_content import pipeline as P
from mlsd.harmful_content.artifact import load_bag, load_classifier
from mlsd.recommendation.data import read_interactions, write_movielens
from mlsd.recommendation.evaluation import run_split
from train.harmful_content import parse_args, run
from train.recommendation import title_embeddings


def compare_table(
    reader: dict[str, float], generic: dict[str, float], row: str, metric: str, floor: float
) -> float:
    """Print the two runs side by side (a row each); -> the largest |difference|."""
    diffs = {k: generic[k] - reader[k] for k in reader}
    print(f"| {row} | the demo's reader | the documented format | difference |")
    print("| --- | --- | --- | --- |")
    for k, d in diffs.items():
        print(f"| {k} | {reader[k]:.4f} | {generic[k]:.4f} | {d:+.4f} |")
    worst = max(abs(d) for d in diffs.values())
    print(f"largest |{metric} difference|: {worst:.4f} (floor: {floor})")
    return worst


def harmful(a: argparse.Namespace, work: str) -> dict:

    posts = D.demo_posts()
    csv_path = os.path.join(work, "demo_posts.csv")
    D.write_posts(posts, csv_path)
    common = [
        "--epochs",
        str(a.epochs),
        "--reviews",
        "none",
        "--store",
        f"{work}/store",
        "--runs-dir",
        f"{work}/runs",
        "--num-cpus",
        "2",
    ]
    out = {"posts_csv": csv_path, "rows": len(posts)}
    for name, extra in (("readers", []), ("generic", ["--posts", csv_path])):
        out[name] = run(parse_args([*common, "--name", f"hc_{name}", *extra]))
        ray.shutdown()
    test = D.all_posts("test")
    y, mask = D.label_matrix(test)
    table = {}
    for name in ("readers", "generic"):
        art = ArtifactStore(f"{work}/store").load(f"hc_{name}")
        model, cfg = load_classifier(art)
        enc = F.artifact_encoder(art.config, num_threads=2)
        x = P.featurize(test, enc, load_bag(art), cfg.spec, a.cache)
        assert tuple(cfg.heads) == D.HEADS, cfg.heads
        scores = P.head_scores(test, cfg.heads, P.predict(model, x), y, mask)
        table[name] = {k: v["auroc"] for k, v in scores.items()}
    worst = compare_table(table["readers"], table["generic"], "head/lang", "AUROC", 0.005)
    out |= {"test_auroc": table, "max_abs_difference": worst}
    return out


def recommendation(a: argparse.Namespace, work: str) -> dict:
    """MovieLens 100K written out as interactions / items / users CSVs and read back through
    ``mlsd.recommendation.data``; the evaluation table (``bench.recommendation_eval``'s rows:
    popularity, WALS default and tuned, the two-stage system) on both, same split and seed."""

    torch.set_num_threads(2)
    ml = load_movielens()
    paths = write_movielens(ml, os.path.join(work, "movielens_generic"))
    own = read_interactions(paths["interactions"], paths["items"], paths["users"])
    table = {}
    for name, log in (("reader", ml), ("generic", own.ml)):
        print(f"{name}:", flush=True)
        emb = title_embeddings(log, "offline:all-MiniLM-L6-v2")
        rows = run_split(log, emb, a.split, seeds=1, threads=2)
        table[name] = {r["model"]: r["nDCG@10"] for r in rows}
    worst = compare_table(table["reader"], table["generic"], "model", "nDCG@10", 0.002)
    return {"ndcg10": table, "max_abs_difference": worst, "input": own.bad.report()}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--system", default="harmful", choices=["harmful", "recommendation"])
    p.add_argument("--split", default="temporal", help="recommendation: temporal | random")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--cache", default=os.path.abspath("var/cache/harmful_content"))
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="roundtrip-") as work:
        out = (harmful if a.system == "harmful" else recommendation)(a, work)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=2, default=lambda o: float(o) if np.isscalar(o) else str(o))


if __name__ == "__main__":
    main()
