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
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import ray

from mlsd.artifacts import ArtifactStore
from mlsd.data import fashion_mnist as fm
from mlsd.visual_search.artifact import (
    build_photo_artifact,
    build_visual_search_artifact,
    load_encoder_module,
)
from mlsd.visual_search.model import EncoderConfig
from train.common import init_ray
from train.visual_search_photos import (
    EmbedBatch,
    add_index_args,
    add_photo_args,
    embed_photo_rows,
    index_config,
    photo_source,
)


def embed_with_ray_data(images: np.ndarray, onnx_path: Path, batch_size: int = 256) -> np.ndarray:
    """(N, C, H, W) float32 -> (N, D) embeddings, by a Ray Data batch-inference pipeline."""

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


def index_photos(a, store: ArtifactStore, src, model, cfg: EncoderConfig) -> dict:
    """A photo catalogue (``--images``) indexed with ``src``'s encoder as a new version;
    photos ``src`` had keep their ids."""

    source = photo_source(a)
    previous = {}
    if "catalogue.parquet" in src.manifest.get("files", {}):
        t = pq.read_table(src.file("catalogue.parquet")).to_pydict()
        files = t.get("file", [""] * len(t["image_id"]))  # the demo's versions have none
        previous = {f: int(i) for f, i in zip(files, t["image_id"], strict=True) if f}
    t0 = time.perf_counter()
    version = build_photo_artifact(
        store,
        a.name,
        model,
        cfg,
        {**src.config.get("train", {}), "reindexed_from": src.version},
        source,
        index_config(a),
        embed_rows=embed_photo_rows(source, cfg, a),
        live_log=a.live_log,
        objects=a.objects,
        previous_ids=previous,
        max_bad_fraction=a.max_bad_fraction,
    )
    metrics = store.load(a.name, version).manifest["metrics"]
    return {
        "artifact": f"{a.name}/{version}",
        "photos": len(source),
        "seconds": time.perf_counter() - t0,  # the whole job: export, int8, index, write
        "embed_seconds": metrics["embed_seconds"],  # the stream: read, decode, embed, store
        "photos_per_second": metrics["photos_per_second"],
        "photos_per_second_steady": metrics["photos_per_second_steady"],
        "input": metrics["input"],
    }


def index_job(argv: list[str] | None = None) -> dict:
    """The job's work; -> what it prints."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--store", default="artifacts")
    p.add_argument("--name", default="visual_search")
    p.add_argument("--from-version", default="latest", help="encoder to index with")
    p.add_argument("--data-dir", default=None, help="Fashion-MNIST folder (default: find it)")
    p.add_argument("--split", default="test", choices=["train", "test"])
    add_index_args(p)
    p.add_argument(
        "--live-log", default=None, help="fold this live-addition log in (a state store URL)"
    )
    p.add_argument(
        "--objects",
        default="var/visual_search/objects",
        help="the object store of the log's uploaded bytes (the app's object_store)",
    )
    p.add_argument("--num-cpus", type=int, default=None)
    p.add_argument("--use-gpu", action="store_true", help="inference actors on GPUs")
    g = p.add_argument_group("your own photos (README, 'Your own data')")
    add_photo_args(g)
    a = p.parse_args(argv)

    init_ray(a.num_cpus)
    store = ArtifactStore(a.store)
    src = store.load(a.name, a.from_version)
    cfg = EncoderConfig.from_dict(src.config["encoder"])
    model = load_encoder_module(src)
    if a.images is not None:
        return index_photos(a, store, src, model, cfg)
    split = fm.load(a.split, a.data_dir)
    version = build_visual_search_artifact(
        store,
        a.name,
        model,
        cfg,
        {**src.config.get("train", {}), "reindexed_from": src.version},
        split.images,
        split.labels,
        index_config(a),
        live_log=a.live_log,
        objects=a.objects,
        embed=embed_with_ray_data,
        data_info={"catalogue": f"fashion-mnist/{a.split}"},
    )
    return {"artifact": f"{a.name}/{version}", "store": a.store}


def main(argv: list[str] | None = None) -> None:
    print(json.dumps(index_job(argv), default=str))


if __name__ == "__main__":
    main()
