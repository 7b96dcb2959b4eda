"""ANN benchmark: recall@10 vs queries/s, one thread, one query at a time.

Our index modes (mlsd.index, "auto" above its threshold: speed = HNSW with efSearch tuned to
the target recall on held-out catalogue vectors; memory = IVF over 8-bit codes with nprobe
tuned; and the former default, IVF over full vectors) against exact search (faiss IndexFlatIP)
and hnswlib at the same M (also at our tuned ef, for the same recall), on synthetic 128-d vectors (a
1,000-cluster Gaussian mixture in a 32-d latent space, L2-normalised: the anchors' protocol) and
on the visual-search embeddings of Fashion-MNIST.

    python -m bench.ann                      # 1M synthetic + Fashion-MNIST embeddings
    python -m bench.ann --n 100000 --skip-fmnist   # quick
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing
import resource
import sys
import time
from concurrent.futures import ProcessPoolExecutor

import faiss
import numpy as np

from mlsd.artifacts import ArtifactError, ArtifactStore
from mlsd.data import fashion_mnist as fm
from mlsd.image import images_to_tensor
from mlsd.index import IndexConfig, VectorIndex, recall_at_k_ids
from mlsd.runtime import OnnxRunner

SPREAD = 1.0  # within-cluster standard deviation, relative to the centres' spread


def synthetic(n: int, n_queries: int, d: int = 128, latent: int = 32, clusters: int = 1000, seed=0):
    """Gaussian mixture in a latent space, mapped to d dims, L2-normalised (base, queries)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, latent)).astype(np.float32)
    proj = rng.normal(size=(latent, d)).astype(np.float32) / np.sqrt(latent)

    def draw(m):
        # within-cluster spread as large as the spread of the centres: neighbourhoods cross
        # cluster borders, so a clustering (IVF) index has to probe many lists
        noise = SPREAD * rng.normal(size=(m, latent)).astype(np.float32)
        z = centres[rng.integers(0, clusters, m)] + noise
        x = z @ proj + 0.05 * rng.normal(size=(m, d)).astype(np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    base = np.concatenate([draw(min(100_000, n - i)) for i in range(0, n, 100_000)])
    return np.ascontiguousarray(base, np.float32), np.ascontiguousarray(draw(n_queries), np.float32)


def _timed_queries(search_one, queries: np.ndarray, k: int) -> tuple[np.ndarray, float]:
    out = np.empty((len(queries), k), dtype=np.int64)
    t0 = time.perf_counter()
    for i in range(len(queries)):
        out[i] = search_one(queries[i : i + 1])
    return out, len(queries) / (time.perf_counter() - t0)


_HNSWLIB = None  # (index, queries, k), inherited by forked children


HNSWLIB_QUERIES = 200  # see below: hnswlib 0.8 grows memory with every single query at 1M


def _hnswlib_queries(ef: int) -> tuple[np.ndarray, float]:
    h, queries, k = _HNSWLIB
    h.set_num_threads(1)
    h.set_ef(ef)
    q = queries[:HNSWLIB_QUERIES]
    return _timed_queries(lambda x: h.knn_query(x, k=k, num_threads=1)[0][0], q, k)


def _log(msg: str) -> None:

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"[ann] {msg} (max RSS {rss:,.0f} MB)", file=sys.stderr, flush=True)


def _size_mb(index: faiss.Index) -> float:
    return faiss.serialize_index(index).nbytes / 2**20


def run(
    base: np.ndarray, queries: np.ndarray, k: int, hnsw_m: int, ef_c: int, label: str
) -> list[dict]:
    rows = []
    faiss.omp_set_num_threads(1)
    exact = faiss.IndexFlatIP(base.shape[1])
    exact.add(base)
    truth, qps_exact = _timed_queries(lambda q: exact.search(q, k)[1][0], queries, k)
    rows.append(
        {
            "data": label,
            "index": "faiss IndexFlatIP (exact)",
            "setting": "-",
            "recall@10": 1.0,
            "qps": qps_exact,
            "build_s": 0.0,
            "mb": base.nbytes / 2**20,
        }
    )
    faiss.omp_set_num_threads(2)  # builds may use the machine; searches stay single-threaded
    flat_mb = rows[0]["mb"]
    auto = {"kind": "auto", "auto_threshold": 0}
    configs = [  # (row name, config): the two modes "auto" has, then the former default
        (
            "ours: speed mode (auto: HNSW{m})",
            IndexConfig(**auto, hnsw_m=hnsw_m, ef_construction=ef_c),
        ),
        ("ours: memory mode (auto: IVF{nlist},SQ8)", IndexConfig(**auto, mode="memory")),
        ("ours: IVF{nlist},Flat (former default)", IndexConfig(kind="ivf")),
    ]
    tuned_ef = None
    for name, cfg in configs:
        faiss.omp_set_num_threads(2)
        t0 = time.perf_counter()
        index = VectorIndex.build(base, cfg=cfg)
        build = time.perf_counter() - t0
        knob, tuned = index.knob
        tuned_ef = tuned if index.kind == "hnsw" else tuned_ef
        title = name.format(m=hnsw_m, nlist=getattr(index.index, "nlist", ""))
        _log(f"{label}: {title} built in {build:.0f} s, tuned {knob} {tuned}")
        faiss.omp_set_num_threads(1)
        for value in sorted({tuned, max(1, tuned // 2), tuned * 2}):
            index.set_knob(value)
            got, qps = _timed_queries(lambda q, index=index: index.search(q, k)[1][0], queries, k)
            rows.append(
                {
                    "data": label,
                    "index": title,
                    "setting": f"{knob} {value}" + (" (tuned)" if value == tuned else ""),
                    "recall@10": recall_at_k_ids(got, truth),
                    "qps": qps,
                    "build_s": build,
                    "mb": _size_mb(index.index),
                }
            )
        del index
    try:
        import hnswlib
    except ImportError:
        hnswlib = None
    if hnswlib is not None:
        h = hnswlib.Index(space="ip", dim=base.shape[1])
        t0 = time.perf_counter()
        h.init_index(max_elements=len(base), M=hnsw_m, ef_construction=ef_c, random_seed=0)
        h.set_num_threads(2)
        h.add_items(base, np.arange(len(base)))
        build = time.perf_counter() - t0
        _log(f"{label}: hnswlib built in {build:.0f} s")
        global _HNSWLIB
        _HNSWLIB = (h, queries, k)
        for ef in sorted({32, 64, 128, tuned_ef or 64}):
            # hnswlib 0.8's single-query path grew the process by > 10 GB over 1,000 queries
            # at 1M vectors (seen here): each setting runs in a forked child, whose memory goes
            # when it exits, on the first HNSWLIB_QUERIES queries
            ctx = multiprocessing.get_context("fork")
            with ProcessPoolExecutor(1, mp_context=ctx) as pool:
                got, qps = pool.submit(_hnswlib_queries, ef).result()
            rows.append(
                {
                    "data": label,
                    "index": f"hnswlib M={hnsw_m}",
                    "setting": f"ef {ef}",
                    "recall@10": recall_at_k_ids(got, truth[: len(got)]),
                    "qps": qps,
                    "build_s": build,
                    "mb": None,
                }
            )
    for r in rows:
        r["x_exact_qps"] = r["qps"] / qps_exact
        r["share_of_flat"] = None if r["mb"] is None else r["mb"] / flat_mb
    print(to_markdown(rows), flush=True)  # each data set's table as soon as it is measured
    return rows


def fmnist_embeddings(store: str, name: str) -> tuple[np.ndarray, np.ndarray] | None:
    """The served catalogue's embeddings (10k test images) and 1,000 train images as queries,
    embedded by the artifact's fp32 ONNX model in batches."""

    try:
        art = ArtifactStore(store).load(name)
    except ArtifactError as e:
        print(f"skipping Fashion-MNIST: {e}")
        return None
    runner = OnnxRunner(art.file("encoder.onnx"))

    def embed(images: np.ndarray) -> np.ndarray:
        x = images_to_tensor(images).numpy()
        out = np.concatenate([runner.run(x[i : i + 256]) for i in range(0, len(x), 256)])
        return np.ascontiguousarray(out / np.linalg.norm(out, axis=1, keepdims=True), np.float32)

    return embed(fm.load("test").images), embed(fm.load("train").images[:1000])


def to_markdown(rows: list[dict]) -> str:
    out = io.StringIO()
    out.write(
        "| data | index | setting | recall@10 | queries/s | x exact | build s | MB | x flat MB |\n"
    )
    out.write("| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n")
    for r in rows:
        mb = "-" if r["mb"] is None else f"{r['mb']:.0f}"
        share = "-" if r.get("share_of_flat") is None else f"{r['share_of_flat']:.2f}"
        out.write(
            f"| {r['data']} | {r['index']} | {r['setting']} | {r['recall@10']:.3f} | "
            f"{r['qps']:,.0f} | {r['x_exact_qps']:.1f} | {r['build_s']:.0f} | {mb} | {share} |\n"
        )
    return out.getvalue()


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--hnsw-m", type=int, default=32)
    p.add_argument("--ef-construction", type=int, default=200)
    p.add_argument("--skip-fmnist", action="store_true")
    p.add_argument("--skip-synthetic", action="store_true")
    p.add_argument("--store", default="artifacts")
    p.add_argument("--name", default="visual_search")
    p.add_argument("--json", default=None, help="also write the rows here")
    a = p.parse_args(argv)
    rows = []
    if not a.skip_synthetic:
        base, queries = synthetic(a.n, a.queries)
        rows += run(base, queries, 10, a.hnsw_m, a.ef_construction, f"synthetic {a.n:,} x 128")
        del base
    if not a.skip_fmnist:
        data = fmnist_embeddings(a.store, a.name)
        if data is not None:
            base, queries = data
            rows += run(
                base, queries, 10, 16, 100, f"Fashion-MNIST {len(base):,} x {base.shape[1]}"
            )
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
