"""Serving benchmark: POST /visual-search/search over HTTP vs the same pipeline in one process.

Bounded load on loopback only: a fixed number of requests at a fixed concurrency. Rows:
- in-process: encode -> retrieve -> rerank called directly, one request at a time;
- HTTP, Serve graph with ``@serve.batch`` (max_batch_size 16);
- HTTP, the same graph with batching off (max_batch_size 1), to show what batching buys.
The load generator shares the machine's cores with the server (2 on a laptop).

    python -m bench.serve_visual_search --requests 400 --concurrency 8
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import ray
from ray import serve

from apps.visual_search import VisualSearchArgs, build_app
from bench import loadgen
from mlsd.artifacts import ArtifactStore
from mlsd.data import fashion_mnist as fm
from mlsd.visual_search.catalogue import CatalogueIndex
from mlsd.visual_search.pipeline import ImageEncoderModel, search_pipeline
from tests.conftest import png_bytes


def in_process(store: str, name: str, backend: str, payloads: list[bytes], k: int) -> dict:
    art = ArtifactStore(store).load(name)
    enc = ImageEncoderModel(art, backend=backend)
    cat = CatalogueIndex(art, live_log=None)
    for p in payloads[:10]:
        search_pipeline(enc, cat, p, k)
    lat = []
    t0 = time.perf_counter()
    for p in payloads:
        s = time.perf_counter()
        search_pipeline(enc, cat, p, k)
        lat.append((time.perf_counter() - s) * 1e3)
    return loadgen.summary(f"in-process pipeline ({backend})", lat, time.perf_counter() - t0)


def http_load(url: str, payloads: list[bytes], k: int, concurrency: int, name: str) -> dict:
    def send(session, i):
        files = {"image": ("q.png", payloads[i])}
        return session.post(f"{url}/search", params={"k": k}, files=files, timeout=60)

    return loadgen.http_load(send, len(payloads), concurrency, name)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--store", default="artifacts")
    p.add_argument("--backend", default="onnx")
    p.add_argument("--artifact", default="visual_search")
    p.add_argument("--requests", type=int, default=400)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--k", type=int, default=10)
    a = p.parse_args(argv)
    store = os.path.abspath(a.store)
    imgs = fm.load("train").images[: a.requests]  # queries the catalogue has not seen
    payloads = [png_bytes(i) for i in imgs]
    rows = [in_process(store, a.artifact, a.backend, payloads, a.k)]

    os.environ.setdefault("RAY_TMPDIR", tempfile.mkdtemp(prefix="ray-bench-"))
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    port = 8765
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        for batch, label in (
            (16, "HTTP, Serve graph, @serve.batch 16"),
            (1, "HTTP, Serve graph, no batching"),
        ):
            args = VisualSearchArgs(
                artifact_store=store,
                model={"artifact": a.artifact, "backend": a.backend},
                live_log=None,
                batching={"max_batch_size": batch, "batch_wait_timeout_s": 0.005},
            )
            serve.run(build_app(args), name="vs_bench", route_prefix="/visual-search")
            rows.append(
                http_load(
                    f"http://127.0.0.1:{port}/visual-search",
                    payloads,
                    a.k,
                    a.concurrency,
                    f"{label} (concurrency {a.concurrency})",
                )
            )
            serve.delete("vs_bench")
    finally:
        serve.shutdown()
        ray.shutdown()
    base = rows[0]
    print("| setup | requests | errors | p50 ms | p99 ms | req/s | req/s vs in-process |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(
            f"| {r['setup']} | {r['requests']} | {r['errors']} | {r['p50_ms']:.1f} | "
            f"{r['p99_ms']:.1f} | {r['rps']:.1f} | {r['rps'] / base['rps']:.2f}x |"
        )


if __name__ == "__main__":
    main()
