"""Serving benchmark: POST /visual-search/search over HTTP vs the same pipeline in one process.

Bounded load on loopback only: a fixed number of requests at a fixed concurrency. Rows:
- in-process: decode -> encode -> retrieve -> rerank called directly, one request at a time;
- HTTP, the encoder in the ingress (``encoder_placement: ingress``, what serve_config.yaml
  serves on CPU);
- HTTP, the encoder as its own ImageEncoder deployment, with ``@serve.batch`` (16) and without
  (what serve_config.gpu.yaml serves on a GPU).

The load generator shares the machine's cores with the server (2 on a laptop). Serve runs
with the Makefile's settings (``make serve``'s: control loop and metrics periods of 1 s; set
``RAY_SERVE_CONTROL_LOOP_INTERVAL_S=0.1 RAY_SERVE_METRICS_EXPORT_INTERVAL_MS=100`` for Ray's
defaults). Requests carry an API key (search scope) from a key store of the run's own, as
every caller's do. After each HTTP row, where its time went: the mean per request of the
proxy, each deployment's handler and the app's own stages (``mlsd_stage_latency_ms``), read
from Ray's metrics endpoint, and the CPU each process spent per request.

    python -m bench.serve_visual_search --requests 400 --concurrency 8
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

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
    inproc = in_process(store, a.artifact, a.backend, payloads, a.k)

    bench = loadgen.ServeBench(tempfile.mkdtemp(prefix="vs-bench-"))
    bench.rows.append(inproc)
    url = bench.url("/visual-search")

    def send(session, i):
        files = {"image": ("q.png", payloads[i])}
        return session.post(
            f"{url}/search", params={"k": a.k}, files=files, headers=bench.auth, timeout=60
        )

    try:
        for placement, batch, label in (
            ("ingress", 16, "HTTP, encoder in the ingress (served)"),
            ("deployment", 16, "HTTP, ImageEncoder deployment, @serve.batch 16"),
            ("deployment", 1, "HTTP, ImageEncoder deployment, no batching"),
        ):
            args = VisualSearchArgs(
                artifact_store=store,
                model={"artifact": a.artifact, "backend": a.backend},
                live_log=None,
                auth={"key_store": bench.keys},
                encoder_placement=placement,
                batching={"max_batch_size": batch, "batch_wait_timeout_s": 0.005},
            )
            app = f"vs_bench_{placement}_{batch}"  # its own series in the metrics
            serve.run(build_app(args), name=app, route_prefix="/visual-search")
            bench.load(app, send, len(payloads), a.concurrency, f"{label} (c={a.concurrency})")
            serve.delete(app)
    finally:
        bench.close()
    bench.report(
        "VisualSearchIngress",
        [("decode", None), ("encode", "ImageEncoder"), ("retrieve", "Retriever")],
    )


if __name__ == "__main__":
    main()
