"""Serving benchmark of ``GET /recommendations/users/{id}``: p50 / p99 under bounded loopback
load, against the same pipeline called in one process (the anchor: no Serve, no HTTP).

    python -m bench.serve_recommendation [--requests 400] [--concurrency 8]

Users are drawn (seeded) from MovieLens ids, with 10 % unknown ids (cold start). The load
generator shares the machine with the server.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
import ray
from ray import serve

from apps.recommendation import RecommendationArgs, build_app
from bench import loadgen
from mlsd.artifacts import ArtifactStore
from mlsd.recommendation.artifact import load_ranker, load_recommender
from mlsd.recommendation.pipeline import recommend_one


def users_for(n: int, seed: int = 0) -> list[int]:
    rng = np.random.default_rng(seed)
    known = rng.integers(1, 944, n)
    unknown = rng.integers(100_000, 200_000, n)
    return [int(u if rng.random() > 0.1 else v) for u, v in zip(known, unknown, strict=True)]


def in_process(store: str, name: str, users: list[int], k: int) -> dict:
    art = ArtifactStore(store).load(name)
    rec, ranker = load_recommender(art), load_ranker(art, "torch")
    now = int(time.time())

    def one(u: int) -> None:
        recommend_one(rec.cg, rec.history, ranker, u, k, now, rec.settings)

    for u in users[:10]:
        one(u)
    lat = []
    t0 = time.perf_counter()
    for u in users:
        s = time.perf_counter()
        one(u)
        lat.append((time.perf_counter() - s) * 1e3)
    return loadgen.summary("in-process pipeline", lat, time.perf_counter() - t0)


def http_load(url: str, users: list[int], k: int, concurrency: int, name: str) -> dict:
    def send(session, i):
        return session.get(f"{url}/users/{users[i]}", params={"k": k}, timeout=60)

    return loadgen.http_load(send, len(users), concurrency, name)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--store", default="artifacts")
    p.add_argument("--artifact", default="recommendation")
    p.add_argument("--requests", type=int, default=400)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--k", type=int, default=10)
    a = p.parse_args(argv)
    store = os.path.abspath(a.store)
    users = users_for(a.requests)
    rows = [in_process(store, a.artifact, users, a.k)]

    os.environ.setdefault("RAY_TMPDIR", tempfile.mkdtemp(prefix="ray-bench-"))
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    port = 8766
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        for batch, label in ((16, "HTTP, Serve graph, @serve.batch 16"), (1, "HTTP, no batching")):
            args = RecommendationArgs(
                artifact_store=store,
                model={"artifact": a.artifact},
                events_log=None,
                batching={"max_batch_size": batch},
            )
            serve.run(build_app(args), name="rec_bench", route_prefix="/recommendations")
            rows.append(
                http_load(
                    f"http://127.0.0.1:{port}/recommendations",
                    users,
                    a.k,
                    a.concurrency,
                    f"{label} (concurrency {a.concurrency})",
                )
            )
            serve.delete("rec_bench")
    finally:
        serve.shutdown()
        ray.shutdown()
    base = rows[0]
    print("| setup | requests | errors | p50 ms | p99 ms | req/s | p50 vs in-process |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(
            f"| {r['setup']} | {r['requests']} | {r['errors']} | {r['p50_ms']:.1f} | "
            f"{r['p99_ms']:.1f} | {r['rps']:.1f} | {r['p50_ms'] / base['p50_ms']:.1f}x |"
        )


if __name__ == "__main__":
    main()
