"""Visual search on your own photos: train an RGB encoder on them, then index them.

    python -m train.visual_search --images s3://shop/photos --epochs 60
    python -m train.visual_search_index --images s3://shop/photos --from-version latest

The input is README's "Your own data" format (:mod:`mlsd.visual_search.data`): a folder, glob
or URI of JPEG / PNG / WebP photos of any size, with an optional ``labels.csv`` used only to
report retrieval quality. The encoder is an "adapted" one (:class:`AdaptedEncoder`): the
frozen ImageNet EfficientNet-Lite0 at ``--image-size`` with a projection head trained
self-supervised (NT-Xent over augmented views and mined neighbours) on the photos.

How it scales: Ray Data reads and decodes the photos in parallel tasks and runs the backbone
on ``--views`` augmented crops of each in an actor pool (GPUs with ``--use-gpu``), once; the
TorchTrainer workers then train the head on those features (minutes on CPUs, whatever the
backbone costs). Indexing streams the photos through Ray Data batch inference with the whole
exported ONNX model; the driver holds the embeddings and writes the stored bytes as they come.
Training reads at most ``--train-limit`` photos (spread over the catalogue): a head on frozen
features stops improving long before a million photos; indexing reads all of them.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import ray
import ray.train
import ray.train.torch
import torch

from mlsd.artifacts import ArtifactStore
from mlsd.backbones import EfficientNetLite0Encoder
from mlsd.data.sources import BadRows
from mlsd.index import KINDS, MODES, IndexConfig
from mlsd.runtime import export_onnx, make_runner
from mlsd.visual_search.artifact import build_photo_artifact, photo_batch
from mlsd.visual_search.augment import photo_augment
from mlsd.visual_search.contrastive import (
    ContrastiveConfig,
    FeatureViews,
    PositiveSampler,
    contrastive_step,
    nearest_neighbours,
)
from mlsd.visual_search.data import PhotoSource, read_photo_source
from mlsd.visual_search.model import AdaptedEncoder, EncoderConfig, ProjectionHead
from train.common import fit, init_ray, report, resume, task_resources, unwrap


class EmbedBatch:
    """Ray Data batch-inference callable: {"image": (B, C, H, W), ...} -> {"embedding": (B, D),
    ...}: every other column passes through.

    Runs the exported ONNX model through the shared runner (onnxruntime is several times
    faster than eager torch for the EfficientNet part on CPU), on the GPU Ray assigned the
    actor if any, with as many threads as the actor's CPUs.
    """

    def __init__(self, onnx_bytes: bytes):
        gpu_ids, threads = task_resources()
        self.runner = make_runner("onnx", path=onnx_bytes, num_threads=threads, gpu_ids=gpu_ids)

    def __call__(self, batch: dict) -> dict:
        out = {k: v for k, v in batch.items() if k != "image"}
        out["embedding"] = self.runner.run(batch["image"])
        return out


def add_index_args(p: argparse.ArgumentParser) -> None:
    """The catalogue index's options, shared by the training and indexing jobs."""
    p.add_argument("--index-kind", default="auto", choices=list(KINDS))
    p.add_argument(
        "--index-mode",
        default="speed",
        choices=list(MODES),
        help="what auto builds above its threshold: speed = HNSW, memory = IVF + 8-bit codes",
    )
    p.add_argument("--auto-threshold", type=int, default=IndexConfig.auto_threshold)


def index_config(a: argparse.Namespace) -> IndexConfig:
    return IndexConfig(kind=a.index_kind, auto_threshold=a.auto_threshold, mode=a.index_mode)


def add_photo_args(p: argparse.ArgumentParser) -> None:
    """The options of a photo catalogue, shared by the training and indexing jobs."""
    p.add_argument("--images", default=None, help="folder, glob or URI of photos (your own)")
    p.add_argument("--labels", default="auto", help="file,label CSV (auto: labels.csv beside)")
    p.add_argument("--label-column", default="label")
    p.add_argument(
        "--subset",
        default=None,
        choices=["train", "val", "test"],
        help="keep one part of the photos' fixed hash split (60/20/20 by file name)",
    )
    p.add_argument("--max-bad-fraction", type=float, default=0.5)
    p.add_argument("--batch-size-infer", type=int, default=64)
    p.add_argument("--embed-actors", type=int, default=1, help="Ray Data inference actors")
    p.add_argument(
        "--cpus-per-actor",
        type=float,
        default=1.0,
        help="CPUs each inference actor reserves (at 1, decoding runs in the same actor)",
    )


def photo_source(a: argparse.Namespace, images: str | None = None) -> PhotoSource:
    labels = None if a.labels in ("none", "") else a.labels
    return read_photo_source(
        images or a.images,
        labels,
        a.label_column,
        subset=a.subset,
        max_bad_fraction=a.max_bad_fraction,
    )


def _decode(batch: dict, cfg: dict) -> dict:
    return photo_batch(list(batch["path"]), list(batch["bytes"]), EncoderConfig.from_dict(cfg))


def photo_dataset(files: list[str], cfg: EncoderConfig, batch_size: int = 32, read_tasks: int = 4):
    """Ray Data: photo files -> decoded model inputs (``photo_batch``'s columns), in tasks."""

    blocks = max(1, min(200, len(files) // (8 * batch_size)))
    ds = ray.data.read_binary_files(  # reading is I/O: no CPU reserved (decoding is not), and
        files,
        include_paths=True,
        override_num_blocks=blocks,  # few at once: each read task
        ray_remote_args={"num_cpus": 0},
        concurrency=read_tasks,  # is a worker process
    )
    return ds.map_batches(_decode, fn_kwargs={"cfg": cfg.to_dict()}, batch_size=batch_size)


def _onnx_bytes(model: torch.nn.Module, size: int) -> bytes:
    with tempfile.TemporaryDirectory() as d:
        path = export_onnx(model.eval(), torch.zeros(2, 3, size, size), f"{d}/m.onnx")
        return Path(path).read_bytes()


class ViewFeatures:
    """Ray Data UDF (actors): photos -> backbone features of the photo itself (B, 1280) and
    of ``views`` augmented crops of it (B, K, 1280), float16: the head's training data."""

    def __init__(self, onnx_bytes: bytes, views: int, size: int, strength: float, seed: int):
        gpu_ids, threads = task_resources()
        self.runner = make_runner("onnx", path=onnx_bytes, num_threads=threads, gpu_ids=gpu_ids)
        self.views, self.aug = views, photo_augment(size, strength)
        torch.manual_seed(seed)

    def __call__(self, batch: dict) -> dict:
        x = torch.as_tensor(batch["image"])  # (B, C, S, S)
        clean = self.runner.run(x.numpy())  # (B, 1280)
        views = [
            self.runner.run(torch.stack([self.aug(img) for img in x]).numpy())
            for _ in range(self.views)
        ]
        return {
            "path": batch["path"],
            "error": batch["error"],
            "clean": clean.astype(np.float16),
            "views": np.stack(views, axis=1).astype(np.float16),  # (B, K, 1280)
        }


def view_features(
    source: PhotoSource, cfg: EncoderConfig, a: argparse.Namespace
) -> tuple[np.ndarray, np.ndarray, BadRows]:
    """(N, 1280) clean features, (N, K, 1280) view features of the training photos, and
    what could not be read (the job fails if most of it)."""
    files, limit = source.files, a.train_limit or 100_000
    if len(files) > limit:
        files = files[:: -(-len(files) // limit)]  # spread over the catalogue
    backbone = EfficientNetLite0Encoder(image_size=cfg.image_size)
    ds = photo_dataset(files, cfg).map_batches(
        ViewFeatures,
        fn_constructor_kwargs={
            "onnx_bytes": _onnx_bytes(backbone, cfg.image_size),
            "views": a.views,
            "size": cfg.image_size,
            "strength": a.aug_strength,
            "seed": a.seed,
        },
        batch_size=a.batch_size_infer,
        concurrency=a.embed_actors,
        num_cpus=a.cpus_per_actor,
        num_gpus=1 if a.use_gpu else 0,
    )
    clean, views, bad = [], [], BadRows()
    for b in ds.iter_batches(batch_size=256, batch_format="numpy"):
        ok = np.array([not e for e in b["error"]], bool)
        bad.total += len(ok)
        for p, e in zip(b["path"], b["error"], strict=True):
            if e:
                bad.add(e, str(p))
        clean.append(b["clean"][ok])
        views.append(b["views"][ok])
    bad.check(f"photos under {source.src}", a.max_bad_fraction)
    return np.concatenate(clean), np.concatenate(views), bad


def train_head_per_worker(config: dict) -> None:
    """Runs on every Ray Train worker: the projection head on cached view features."""

    task_resources()
    cc = ContrastiveConfig(**config["contrastive"])
    torch.manual_seed(cc.seed)
    device = ray.train.torch.get_device()
    views, neighbours = ray.get(config["data_ref"])
    rank = ray.train.get_context().get_world_rank()
    sampler = PositiveSampler(
        cc.positives,
        len(views),
        neighbours=neighbours,
        neighbour_prob=cc.neighbour_prob,
        seed=cc.seed + rank,
    )
    pairs = FeatureViews(torch.as_tensor(views), sampler, seed=cc.seed + rank)
    head = ProjectionHead(EncoderConfig.from_dict(config["encoder"]))
    opt = torch.optim.AdamW(head.parameters(), lr=cc.lr, weight_decay=cc.weight_decay)
    state = resume(head, opt)
    start = state["epoch"] + 1 if state else 0
    head = ray.train.torch.prepare_model(head)
    world = ray.train.get_context().get_world_size()
    batch = cc.batch_size // world
    every = config["checkpoint_every"]
    for epoch in range(start, cc.epochs):
        t0, losses = time.perf_counter(), []
        # the anchors are only ids (the features came once, through the object store): each
        # worker takes its share of one seeded permutation per epoch, no dataset to stream
        mine = np.random.default_rng(cc.seed + epoch).permutation(len(views))[rank::world]
        for s in range(0, len(mine) - batch + 1, batch):
            va, vp, _ = pairs(mine[s : s + batch], device)
            losses.append(contrastive_step(head, opt, va, vp, cc.temperature))
            if cc.max_steps_per_epoch and len(losses) >= cc.max_steps_per_epoch:
                break
        metrics = {
            "epoch": epoch,
            "resumed_from_epoch": start,
            "loss": float(np.mean(losses)) if losses else float("nan"),
            "steps": len(losses),
            "epoch_seconds": time.perf_counter() - t0,
        }
        last = epoch == cc.epochs - 1
        state = {"model": unwrap(head).state_dict(), "optimizer": opt.state_dict()}
        report(metrics, state | {"epoch": epoch} if last or (epoch + 1) % every == 0 else None)


def embed_photo_rows(source: PhotoSource, cfg: EncoderConfig, a: argparse.Namespace):
    """``build_photo_artifact``'s rows by Ray Data batch inference: decode in tasks, the
    exported model in ``--embed-actors`` actors; batches reach the driver as they finish."""

    def rows(onnx_path: Path):
        ds = photo_dataset(source.files, cfg).map_batches(
            EmbedBatch,
            fn_constructor_kwargs={"onnx_bytes": Path(onnx_path).read_bytes()},
            batch_size=a.batch_size_infer,
            concurrency=a.embed_actors,
            num_cpus=a.cpus_per_actor,
            num_gpus=1 if getattr(a, "use_gpu", False) else 0,
        )
        yield from ds.iter_batches(batch_size=64, batch_format="numpy")

    return rows


def train_photos(a: argparse.Namespace) -> dict:
    """``train.visual_search --images ...``: train the head, then index the catalogue
    (``--catalogue``, default the same photos) as a new artifact version."""

    init_ray(a.num_cpus)
    source = photo_source(a)
    cfg = EncoderConfig(
        arch="adapted",
        in_channels=3,
        image_size=a.image_size,
        invert="never",
        fit=a.fit,
        embed_dim=a.embed_dim,
        hidden_dim=a.hidden_dim,
    )
    t0 = time.perf_counter()
    clean, views, bad = view_features(source, cfg, a)
    feature_seconds = time.perf_counter() - t0
    positives = "neighbours" if a.positives == "neighbours" else "self"
    neighbours = nearest_neighbours(clean.astype(np.float32), a.neighbour_k, pca_dim=0)
    cc = ContrastiveConfig(
        positives=positives,
        epochs=a.epochs,
        batch_size=min(a.batch_size, len(views)),
        lr=a.lr,
        temperature=a.temperature,
        neighbour_k=a.neighbour_k,
        neighbour_prob=a.neighbour_prob,
        max_steps_per_epoch=a.max_steps_per_epoch,
        seed=a.seed,
        bf16=False,
    )
    config = {
        "contrastive": cc.to_dict(),
        "encoder": cfg.to_dict(),
        "data_ref": ray.put((views, neighbours)),
        "checkpoint_every": max(1, a.epochs // 5),
    }
    shuffled = ray.data.range(len(views), override_num_blocks=8).random_shuffle(seed=a.seed)
    run = fit(train_head_per_worker, config, a, datasets={"train": shuffled})
    state, run_name, train_seconds = run.state, run.run_name, run.seconds
    model = AdaptedEncoder(cfg)
    model.head.load_state_dict(state["model"])
    summary = {
        "run": run_name,
        "photos_trained_on": len(views),
        "feature_seconds": feature_seconds,
        "train_seconds": train_seconds,
        "final": run.metrics,
        "input": bad.report(),
    }
    if a.skip_index:
        return summary
    catalogue = photo_source(a, a.catalogue) if a.catalogue else source
    version = build_photo_artifact(
        ArtifactStore(a.store),
        a.name,
        model,
        cfg,
        {**cc.to_dict(), "views": a.views, "num_workers": a.num_workers, "run": run_name},
        catalogue,
        index_config(a),
        embed_rows=embed_photo_rows(catalogue, cfg, a),
        max_bad_fraction=a.max_bad_fraction,
        extra_metrics={
            "train_seconds": train_seconds,
            "feature_seconds": feature_seconds,
            "final_loss": run.metrics.get("loss"),
            "train_input": bad.report(),
        },
        data_info={"train": f"{source.src} ({len(views)} photos)", "labels_used": False},
    )
    summary["artifact"] = f"{a.name}/{version}"
    return summary
