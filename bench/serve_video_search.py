"""Serving benchmark: GET /video-search/search over HTTP vs the same pipeline in one process.

Bounded load on loopback only: the queries of ``bench/video_queries.json`` (written by hand
from real clips), cycled to ``--requests``, at a fixed concurrency. Rows:
- in-process: the query encoder, the text branch (BM25) and the visual branch + fusion +
  reranking, each the object its deployment holds, called directly one query at a time;
- HTTP, the Serve graph of serve_config.yaml: the query encoder and both branches inside the
  ingress (``encoder_placement: ingress``, ``branch_placement: ingress``): no hop per query;
- HTTP, the branches as deployments (``branch_placement: deployments``, served until issue 25):
  Ingress (query encoder) || TextSearch, then VideoRetriever;
- HTTP, the query encoder as its own TextEncoder deployment too (serve_config.gpu.yaml's graph):
  Ingress -> (TextEncoder || TextSearch) -> VideoRetriever.

Serve runs with the Makefile's settings (what ``make serve`` runs); after the HTTP row, where
its time went (the proxy, each deployment's handler and the app's own stages, from Ray's
metrics endpoint) and the CPU each process spent per request.

    python -m bench.serve_video_search --requests 400 --concurrency 8
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from pathlib import Path

from ray import serve

from apps.video_search import VideoSearchArgs, build_app
from bench import loadgen
from deployments.video_search import TextEncoder, TextSearch, VideoRetriever
from mlsd.video_search.fusion import FusionConfig
from mlsd.video_search.rerank import VideoRerankConfig

QUERIES = Path(__file__).with_name("video_queries.json")


def in_process(args: VideoSearchArgs, queries: list[str], k: int) -> dict:
    """The deployments' own objects in this process (no Serve), one query after another."""
    store, m, c = args.artifact_store, args.model, args.catalogue
    encoder = TextEncoder.func_or_class(store, m.artifact, m.version, m.backend, "cpu")
    text = TextSearch.func_or_class(store, c.artifact, c.version, None)
    retriever = VideoRetriever.func_or_class(
        store, m.artifact, m.version, c.artifact, c.version, None, None
    )
    fusion, rerank = FusionConfig(**args.fusion), VideoRerankConfig(**args.rerank)
    depth, timeout = args.branch_depth, args.branch_timeout_s

    async def one(q: str) -> None:
        vec = encoder.encoder.encode([q])[0]
        hits = text.branch.search(q, depth)
        kept, _ = await retriever.rank(vec, hits, k, depth, timeout, time.time(), fusion, rerank)
        assert kept is not None

    async def run() -> tuple[list[float], float]:
        for q in queries[:10]:
            await one(q)
        lat = []
        t0 = time.perf_counter()
        for q in queries:
            s = time.perf_counter()
            await one(q)
            lat.append((time.perf_counter() - s) * 1e3)
        return lat, time.perf_counter() - t0

    lat, wall = asyncio.run(run())
    return loadgen.summary(f"in-process pipeline ({m.backend})", lat, wall)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--store", default="artifacts")
    p.add_argument("--requests", type=int, default=400)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--backend", default="onnx", help="the query encoder's (serve_config.yaml's)")
    a = p.parse_args(argv)
    texts = [q["q"] for q in json.loads(QUERIES.read_text())["queries"]]
    queries = [texts[i % len(texts)] for i in range(a.requests)]
    base = {
        "artifact_store": os.path.abspath(a.store),
        "model": {"artifact": "video_text_zeroshot", "backend": a.backend},
        "live_log": None,
        "shadow": None,
    }
    inproc = in_process(VideoSearchArgs(**base), queries, a.k)

    bench = loadgen.ServeBench(tempfile.mkdtemp(prefix="video-bench-"))
    bench.rows.append(inproc)
    url = bench.url("/video-search")

    def send(session, i):
        params = {"q": queries[i], "k": a.k}
        return session.get(f"{url}/search", params=params, headers=bench.auth, timeout=60)

    try:
        for placement, branches, label in (
            ("ingress", "ingress", "HTTP, encoder and branches in the ingress (served)"),
            ("ingress", "deployments", "HTTP, encoder in the ingress, branches deployments"),
            ("deployment", "deployments", "HTTP, TextEncoder deployment, @serve.batch 16"),
        ):
            args = VideoSearchArgs(
                **base,
                auth={"key_store": bench.keys},
                encoder_placement=placement,
                branch_placement=branches,
            )
            app = f"video_bench_{placement}_{branches}"  # its own series in the metrics
            serve.run(build_app(args), name=app, route_prefix="/video-search")
            bench.load(app, send, len(queries), a.concurrency, f"{label} (c={a.concurrency})")
            serve.delete(app)
    finally:
        bench.close()
    bench.report(
        "VideoSearchIngress",
        [("query_branches", "TextEncoder"), ("visual_fusion_reranking", "VideoRetriever")],
    )


if __name__ == "__main__":
    main()
