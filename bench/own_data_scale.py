"""Your own data at real size: the readers and the training on logs far larger than the demos.

``--system recommendation``: a SYNTHETIC interaction log (planted low-rank preferences,
``train.recommendation_wals.planted_low_rank``; 10M interactions by default) written as a
Parquet file in the documented format, read back through ``mlsd.recommendation.data``
(wall time, peak memory of the reading process), then WALS (ours) and implicit's ALS on the
same matrix, side by side: seconds per iteration (one-off set-up removed), the same factors
and threads.

``--system harmful``: 100,000 posts in the documented CSV (Davidson's and MLMA's real posts,
each repeated with a distinct suffix so none is a cache hit: labelled as such) trained through
``train.harmful_content --posts`` in a child process: wall time and the peak memory of the
driver and its Ray workers.

    python -m bench.own_data_scale --system recommendation --interactions 10000000
    python -m bench.own_data_scale --system harmful --posts 100000
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np
import pandas as pd
import torch

from bench.wals_speed import compare
from mlsd.data.movielens import interaction_matrix
from mlsd.harmful_content import data as D
from mlsd.recommendation.data import read_interactions
from train.recommendation_wals import planted_low_rank


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def recommendation(a: argparse.Namespace, work: str) -> dict:

    torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    m = planted_low_rank(a.users, a.items, a.interactions, seed=0).tocoo()
    rng = np.random.default_rng(0)
    path = os.path.join(work, "interactions.parquet")
    pd.DataFrame(
        {
            "user_id": m.row.astype(np.int64) + 1,
            "item_id": m.col.astype(np.int64) + 1,
            "timestamp": 1_600_000_000 + rng.integers(0, 3 * 10**7, m.nnz),
            "event": "rate",
            "value": m.data.clip(1, 5),
        }
    ).to_parquet(path)
    made = time.perf_counter() - t0
    del m
    before = _peak_mb()
    t0 = time.perf_counter()
    own = read_interactions(path)
    read_s = time.perf_counter() - t0
    ml = own.ml
    X = interaction_matrix(ml.ratings, ml.n_users, ml.n_items, "rating")
    out = {
        "interactions": int(len(ml.ratings)),
        "users": int(ml.n_users - 1),
        "items": int(ml.n_items - 1),
        "file_mb": os.path.getsize(path) / 2**20,
        "make_seconds": made,
        "read_seconds": read_s,
        "peak_rss_mb_after_read": _peak_mb(),
        "peak_rss_mb_before_read": before,
        "bad_rows": own.bad.count,
    }
    print(
        f"SYNTHETIC log: {out['interactions']:,} interactions, {out['users']:,} users x "
        f"{out['items']:,} items, {out['file_mb']:.0f} MB Parquet; read + validated in "
        f"{read_s:.1f} s; peak RSS {out['peak_rss_mb_after_read']:.0f} MB",
        flush=True,
    )
    del ml, own
    out["wals_vs_implicit"] = compare(
        "SYNTHETIC generic log", X, a.factors, a.iterations, a.repeats, a.threads
    )
    return out


def harmful(a: argparse.Namespace, work: str) -> dict:

    base = D.demo_posts()
    posts = []
    for r in range(-(-a.posts // len(base))):
        for p in base:
            if len(posts) >= a.posts:
                break
            meta = {"split": p.meta["split"], "post_id": f"{p.source}:{p.lang}:{p.row}:{r}"}
            text = p.text if r == 0 else f"{p.text} #{r}"
            posts.append(D.Post(text, p.lang, p.source, p.labels, p.row, meta))
    path = os.path.join(work, "posts.csv")
    D.write_posts(posts, path)
    cmd = [
        sys.executable,
        "-m",
        "train.harmful_content",
        "--posts",
        path,
        "--epochs",
        str(a.epochs),
        "--reviews",
        "none",
        "--store",
        f"{work}/store",
        "--runs-dir",
        f"{work}/runs",
        "--cache",
        f"{work}/cache",
        "--num-cpus",
        "2",
    ]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode:
        print(proc.stderr[-3000:])
        raise SystemExit(f"the training job failed ({proc.returncode})")
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    out = {
        "posts": len(posts),
        "distinct_texts": len({p.text for p in posts}),
        "file_mb": os.path.getsize(path) / 2**20,
        "wall_seconds": wall,
        "peak_rss_mb_largest_child": children,
        "job": json.loads(proc.stdout[proc.stdout.index("{") :]),
    }
    print(
        f"{len(posts):,} posts ({out['distinct_texts']:,} distinct texts; real posts, repeated "
        f"with a suffix), {a.epochs} epochs: {wall:.0f} s wall, peak RSS of the largest "
        f"process {children:.0f} MB",
        flush=True,
    )
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--system", default="recommendation", choices=["recommendation", "harmful"])
    p.add_argument("--interactions", type=int, default=10_000_000)
    p.add_argument("--users", type=int, default=1_000_000)
    p.add_argument("--items", type=int, default=20_000)
    p.add_argument("--factors", type=int, default=64)
    p.add_argument("--iterations", type=int, default=2)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--posts", type=int, default=100_000)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="scale-") as work:
        out = (recommendation if a.system == "recommendation" else harmful)(a, work)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=2, default=str)


if __name__ == "__main__":
    main()
