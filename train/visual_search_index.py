"""Indexing pipeline: Ray Data batch inference embeds the catalogue; faiss indexes it.

``python -m train.visual_search_index --from-version latest`` re-indexes with an existing encoder
(a new catalogue, another index configuration, or folding the live-addition log into a new
artifact version). The training job calls
:func:`mlsd.visual_search.artifact.build_visual_search_artifact` at its end, with
:func:`embed_with_ray_data`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from mlsd.artifacts import ArtifactStore
from mlsd.data import fashion_mnist as fm
from mlsd.index import IndexConfig
from mlsd.runtime import make_runner
from mlsd.visual_search.artifact import build_visual_search_artifact
from mlsd.visual_search.model import EncoderConfig, build_encoder
from train.common import task_resources


class EmbedBatch:
    """Ray Data batch-inference callable: {"image": (B, C, H, W)} -> {"embedding": (B, D)}.

    Runs the exported ONNX model through the shared runner (onnxruntime is several times
    faster than eager torch for the EfficientNet part on CPU), on the GPU Ray assigned the
    actor if any, with as many threads as the actor's CPUs.
    """

    def __init__(self, onnx_bytes: bytes):
        gpu_ids, threads = task_resources()
        self.runner = make_runner("onnx", path=onnx_bytes, num_threads=threads, gpu_ids=gpu_ids)

    def __call__(self, batch: dict) -> dict:
        return {"id": batch["id"], "embedding": self.runner.run(batch["image"])}


def embed_with_ray_data(images: np.ndarray, onnx_path: Path, batch_size: int = 256) -> np.ndarray:
    """(N, C, H, W) float32 -> (N, D) embeddings, by a Ray Data batch-inference pipeline."""
    import ray

    onnx_bytes = Path(onnx_path).read_bytes()
    ref = ray.put(images)

    def attach(batch: dict) -> dict:
        imgs = ray.get(ref)
        return {"id": batch["id"], "image": imgs[np.asarray(batch["id"])]}

    out = (
        ray.data.range(len(images), override_num_blocks=max(1, min(32, len(images) // batch_size)))
        .map_batches(attach, batch_size=batch_size)
        .map_batches(
            EmbedBatch,
            fn_constructor_kwargs={"onnx_bytes": onnx_bytes},
            batch_size=batch_size,
            concurrency=1,
        )
        .take_all()
    )
    out.sort(key=lambda r: r["id"])
    return np.stack([r["embedding"] for r in out]).astype(np.float32)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--store", default="artifacts")
    p.add_argument("--name", default="visual_search")
    p.add_argument("--from-version", default="latest", help="encoder to index with")
    p.add_argument("--data-dir", default=None, help="Fashion-MNIST folder (default: find it)")
    p.add_argument("--split", default="test", choices=["train", "test"])
    p.add_argument("--index-kind", default="auto", choices=["auto", "flat", "ivf", "hnsw"])
    p.add_argument("--auto-threshold", type=int, default=50_000)
    p.add_argument(
        "--live-log", default=None, help="fold this live-addition log in (a state store URL)"
    )
    p.add_argument(
        "--objects",
        default="var/visual_search/objects",
        help="the object store of the log's uploaded bytes (the app's object_store)",
    )
    p.add_argument("--num-cpus", type=int, default=None)
    a = p.parse_args(argv)
    from train.common import init_ray

    init_ray(a.num_cpus)
    store = ArtifactStore(a.store)
    src = store.load(a.name, a.from_version)
    cfg = EncoderConfig.from_dict(src.config["encoder"])
    model = build_encoder(cfg)
    model.load_state_dict(torch.load(src.file("encoder.pt"), weights_only=True))
    split = fm.load(a.split, a.data_dir)
    version = build_visual_search_artifact(
        store,
        a.name,
        model,
        cfg,
        {**src.config.get("train", {}), "reindexed_from": src.version},
        split.images,
        split.labels,
        IndexConfig(kind=a.index_kind, auto_threshold=a.auto_threshold),
        live_log=a.live_log,
        objects=a.objects,
        embed=embed_with_ray_data,
        data_info={"catalogue": f"fashion-mnist/{a.split}"},
    )
    print(json.dumps({"artifact": f"{a.name}/{version}", "store": a.store}))


if __name__ == "__main__":
    main()
