"""Triton vs in-replica onnxruntime for the visual-search encoder, side by side in one run.

    python -m bench.triton_vs_onnx [--store artifacts] [--requests 400] [--concurrency 8]

The same artifact's fp32 (and int8) ONNX encoder, the same Fashion-MNIST test images, the same
thread budget: in process through ``OnnxRunner`` (what a Serve replica runs with ``backend:
onnx``), and through a real Triton Inference Server (nvidia-pytriton's 2.51 binary, the
Python-backend repository ``mlsd.model_repository`` writes, the CPU variant) over gRPC and
HTTP with the asyncio clients a replica uses (``backend: triton``). ``concurrency`` callers
each send single-image requests (Triton's dynamic batcher may merge them), then batches of
``--batch`` images. Prints p50/p99 latency and requests/s per setup, each as a ratio to
onnxruntime, and the max abs difference of the embeddings against onnxruntime.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.loadgen import summary
from mlsd.artifacts import ArtifactStore
from mlsd.data import fashion_mnist as fm
from mlsd.image import images_to_tensor
from mlsd.inference_server import TritonServer
from mlsd.model_repository import TRITON_VERSIONS, export_artifact
from mlsd.runtime import arun, make_runner


async def _load(runner, inputs: list[np.ndarray], concurrency: int, name: str) -> dict:
    """``concurrency`` callers share ``inputs`` (one request each); latency per request."""

    for x in inputs[: 2 * concurrency]:  # warm-up
        await arun(runner, x)
    lat: list[float] = []
    queue = list(range(len(inputs)))

    async def caller():
        while queue:
            i = queue.pop()
            t = time.perf_counter()
            await arun(runner, inputs[i])
            lat.append((time.perf_counter() - t) * 1e3)

    t0 = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(concurrency)))
    return summary(name, lat, time.perf_counter() - t0)


def _ratios(rows: list[dict], anchor: dict) -> list[dict]:
    return [
        {
            **r,
            "p50_x": r["p50_ms"] / anchor["p50_ms"],
            "p99_x": r["p99_ms"] / anchor["p99_ms"],
            "rps_x": r["rps"] / anchor["rps"],
        }
        for r in rows
    ]


async def _compare(setups: dict, tag: str, singles, batches, a) -> list[dict]:
    """Every setup under the same load, one event loop (Triton's asyncio clients live in it)."""
    rows = []
    for shape, inputs in (("1 image", singles), (f"{a.batch} images", batches)):
        part = []
        for name, runner in setups.items():
            r = await _load(runner, inputs, a.concurrency, f"{name} {tag}")
            part.append({**r, "encoder": tag, "request": shape})
        rows += _ratios(part, part[0])
    for runner in setups.values():
        if hasattr(runner, "aclose"):
            await runner.aclose()
    return rows


def run(a: argparse.Namespace) -> dict:

    art = ArtifactStore(a.store).load(a.artifact, a.version)
    x = images_to_tensor(fm.load("test").images[: a.requests]).numpy()  # (N, 1, 28, 28)
    singles = [x[i : i + 1] for i in range(len(x))]
    batches = [x[i : i + a.batch] for i in range(0, len(x), a.batch)]
    repo = Path(tempfile.mkdtemp(prefix="triton-bench-"))
    export_artifact(art, repo, variant="python", max_batch_size=64, intra_op_threads=a.threads)
    server = TritonServer(repo, a.triton_venv, log_path=repo / "tritonserver.log").start()
    rows, diffs = [], {}
    try:
        for tag, fname in (("fp32", "encoder.onnx"), ("int8", "encoder.int8.onnx")):
            local = make_runner("onnx", path=art.file(fname), device="cpu", num_threads=a.threads)
            ref = local.run(x)
            setups = {"onnxruntime in replica": local}
            for proto, url in (("grpc", server.grpc_url), ("http", server.http_url)):
                setups[f"triton {proto}"] = make_runner(
                    "triton",
                    server={
                        "url": url,
                        "protocol": proto,
                        "model_name": art.name,
                        "model_version": str(
                            TRITON_VERSIONS["triton" if tag == "fp32" else "triton-int8"]
                        ),
                        "expect": {"artifact": f"{art.name}/{art.version}"},
                    },
                )
            rows += asyncio.run(_compare(setups, tag, singles, batches, a))
            for name, runner in setups.items():
                if name.startswith("triton"):
                    diffs[f"{name} {tag}"] = float(np.abs(runner.run(x) - ref).max())
    finally:
        server.stop()
    return {
        "artifact": f"{art.name}/{art.version}",
        "images": len(x),
        "concurrency": a.concurrency,
        "threads": a.threads,
        "rows": rows,
        "max_abs_diff_vs_onnxruntime": diffs,
    }


def _table(out: dict) -> str:
    lines = [
        "| encoder | request | setup | p50 ms | p99 ms | req/s | p50 x | p99 x | req/s x |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in out["rows"]:
        lines.append(
            f"| {r['encoder']} | {r['request']} | {r['setup'].rsplit(' ', 1)[0]} | "
            f"{r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['rps']:.0f} | {r['p50_x']:.2f} | "
            f"{r['p99_x']:.2f} | {r['rps_x']:.2f} |"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--store", default="artifacts")
    p.add_argument("--artifact", default="visual_search")
    p.add_argument("--version", default="latest")
    p.add_argument("--requests", type=int, default=400, help="images (and single requests)")
    p.add_argument("--batch", type=int, default=16, help="images per batched request")
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--threads", type=int, default=1, help="onnxruntime threads, both sides")
    p.add_argument("--triton-venv", default=".venv-triton")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    out = run(parse_args(argv))
    print(json.dumps(out, indent=2))
    print(_table(out))


if __name__ == "__main__":
    main()
