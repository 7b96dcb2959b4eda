"""Indexing pipeline: Ray Data batch inference embeds the catalogue; faiss indexes it.

``python -m train.index_catalogue --from-version latest`` re-indexes with an existing encoder
(a new catalogue, another index configuration, or folding the live-addition log into a new
artifact version). The training job calls :func:`build_visual_search_artifact` at its end.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from mlsd.artifacts import ArtifactStore
from mlsd.catalogue import CatalogueLog
from mlsd.data import fashion_mnist as fm
from mlsd.image import decode_image, dhash, images_to_tensor, to_array
from mlsd.index import IndexConfig, VectorIndex
from mlsd.models.encoder import EncoderConfig, build_encoder
from mlsd.retrieval_eval import evaluate_embeddings
from mlsd.runtime import OnnxRunner, export_onnx, quantize_int8


class EmbedBatch:
    """Ray Data batch-inference callable: {"image": (B, C, H, W)} -> {"embedding": (B, D)}.

    Runs the exported ONNX model (onnxruntime is several times faster than eager torch for
    the EfficientNet part on CPU; on a GPU node it takes the CUDA provider).
    """

    def __init__(self, onnx_bytes: bytes, num_threads: int = 0):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        if num_threads:
            opts.intra_op_num_threads = num_threads
        self.session = ort.InferenceSession(
            onnx_bytes, opts, providers=ort.get_available_providers()
        )
        self.input = self.session.get_inputs()[0].name

    def __call__(self, batch: dict) -> dict:
        x = np.ascontiguousarray(batch["image"], dtype=np.float32)
        return {"id": batch["id"], "embedding": self.session.run(None, {self.input: x})[0]}


def embed_catalogue(
    images: np.ndarray, onnx_path: Path, use_ray_data: bool = True, batch_size: int = 256
) -> np.ndarray:
    """(N, C, H, W) float32 -> (N, D) embeddings, by a Ray Data pipeline (or in process)."""
    onnx_bytes = Path(onnx_path).read_bytes()
    if not use_ray_data:
        embed = EmbedBatch(onnx_bytes)
        outs = [
            embed(
                {
                    "id": np.arange(i, min(i + batch_size, len(images))),
                    "image": images[i : i + batch_size],
                }
            )["embedding"]
            for i in range(0, len(images), batch_size)
        ]
        return np.concatenate(outs).astype(np.float32)
    import ray

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


def build_visual_search_artifact(
    store: ArtifactStore,
    name: str,
    model: torch.nn.Module,
    encoder_cfg: EncoderConfig,
    train_config: dict,
    catalogue_images: np.ndarray,  # (N, 28, 28) uint8
    catalogue_labels: np.ndarray | None,
    index_cfg: IndexConfig,
    live_log: str | None = None,
    use_ray_data: bool = True,
    extra_metrics: dict | None = None,
    data_info: dict | None = None,
) -> str:
    """Embed + index the catalogue, export ONNX fp32/int8, evaluate, commit a new version."""
    t0 = time.perf_counter()
    model = model.eval().cpu()
    state = {k: v.cpu() for k, v in model.state_dict().items()}
    x = images_to_tensor(catalogue_images).numpy()  # (N, C, H, W)
    writer = store.new_version(name)
    torch.save(state, writer.path("encoder.pt"))
    export_onnx(model, torch.as_tensor(x[:2]), writer.path("encoder.onnx"))
    emb = embed_catalogue(x, writer.path("encoder.onnx"), use_ray_data)
    ids = np.arange(len(x), dtype=np.int64)
    owners = ["catalogue"] * len(x)
    private = [False] * len(x)
    unsafe = [False] * len(x)
    signatures = [dhash(img) for img in catalogue_images]
    labels = [int(v) for v in catalogue_labels] if catalogue_labels is not None else [-1] * len(x)
    folded = 0
    if live_log and Path(live_log).exists():  # the indexing path of the book: fold live adds
        logdb = CatalogueLog(live_log)
        extra_emb, extra_ids = [], []
        for _, live in logdb.since(0):
            data = logdb.image_bytes(live.meta.image_id)
            if data is None:
                continue
            arr = to_array(decode_image(data), encoder_cfg.image_size, encoder_cfg.in_channels)
            with torch.inference_mode():
                extra_emb.append(model(torch.as_tensor(arr[None])).numpy()[0])
            extra_ids.append(live.meta.image_id)
            owners.append(live.meta.owner)
            private.append(live.meta.private)
            unsafe.append(live.meta.unsafe)
            signatures.append(live.meta.signature)
            labels.append(-1)
        logdb.close()
        if extra_ids:
            emb = np.concatenate([emb, np.stack(extra_emb)])
            ids = np.concatenate([ids, np.asarray(extra_ids, dtype=np.int64)])
            folded = len(extra_ids)
    index = VectorIndex.build(emb, ids, index_cfg)
    index.save(writer.path("index.faiss"))
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(
        pa.table(
            {
                "image_id": ids,
                "owner": owners,
                "private": private,
                "unsafe": unsafe,
                "signature": signatures,
                "label": labels,
            }
        ),
        writer.path("catalogue.parquet"),
    )
    metrics: dict = dict(extra_metrics or {})
    n = len(catalogue_images)
    if catalogue_labels is not None:
        metrics["catalogue_eval"] = evaluate_embeddings(emb[:n], np.asarray(catalogue_labels))
    # model compression: static int8 calibrated on catalogue images; parity with torch
    with torch.inference_mode():
        torch_ref = model(torch.as_tensor(x[:64])).numpy()
    metrics["onnx_vs_torch_max_abs_diff"] = float(np.abs(emb[:64] - torch_ref).max())
    calib = [x[i : i + 64] for i in range(0, min(len(x), 1024), 64)]
    quantize_int8(writer.path("encoder.onnx"), writer.path("encoder.int8.onnx"), calib)
    sample = x[: min(len(x), 1000)]
    ref = emb[: len(sample)]
    for tag, fname in (("onnx", "encoder.onnx"), ("onnx_int8", "encoder.int8.onnx")):
        out = OnnxRunner(writer.path(fname)).run(sample)
        out = out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        metrics[f"{tag}_max_abs_diff"] = float(np.abs(out - ref).max())
        metrics[f"{tag}_mean_cosine"] = float((out * ref).sum(1).mean())
    metrics["index"] = {"kind": index.kind, "size": len(index), "nprobe": index.nprobe}
    metrics["folded_live_images"] = folded
    metrics["index_seconds"] = time.perf_counter() - t0
    version = writer.commit(
        config={
            "encoder": encoder_cfg.to_dict(),
            "train": train_config,
            "index": index_cfg.to_dict(),
        },
        data=data_info or {},
        metrics=metrics,
    )
    return version


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--store", default="artifacts")
    p.add_argument("--name", default="visual_search")
    p.add_argument("--from-version", default="latest", help="encoder to index with")
    p.add_argument("--data-dir", default=None, help="Fashion-MNIST folder (default: find it)")
    p.add_argument("--split", default="test", choices=["train", "test"])
    p.add_argument("--index-kind", default="auto", choices=["auto", "flat", "ivf", "hnsw"])
    p.add_argument("--auto-threshold", type=int, default=50_000)
    p.add_argument("--live-log", default=None, help="fold this live-addition log in")
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
        data_info={"catalogue": f"fashion-mnist/{a.split}"},
    )
    print(json.dumps({"artifact": f"{a.name}/{version}", "store": a.store}))


if __name__ == "__main__":
    main()
