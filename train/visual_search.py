"""Train the visual-search image encoder contrastively on Ray Train, then index the catalogue.

    python -m train.visual_search --positives neighbours --epochs 10
    ray job submit --working-dir . -- python -m train.visual_search --num-workers 2 --use-gpu

Ray Data feeds the trainer: anchor ids -> positive sampling + torchvision augmentations in
``map_batches`` (CPU workers) -> batches of view pairs; the TorchTrainer workers (CPU or GPU,
``--num-workers``) optimise NT-Xent. Each epoch reports metrics and a checkpoint through
``ray.train.report``; re-running with the same ``--run-name`` resumes from the latest one.
At the end the encoder is exported (ONNX fp32 + int8), the catalogue embedded with Ray Data
batch inference and indexed with faiss, and everything is written as one artifact version.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from mlsd.artifacts import ArtifactStore
from mlsd.contrastive import ContrastiveConfig, ViewMaker, contrastive_step, nearest_neighbours
from mlsd.data import fashion_mnist as fm
from mlsd.index import IndexConfig
from mlsd.models.encoder import EncoderConfig, build_encoder


def train_loop_per_worker(config: dict) -> None:
    """Runs on every Ray Train worker."""
    import ray.train
    import ray.train.torch

    if config.get("torch_threads"):
        torch.set_num_threads(int(config["torch_threads"]))
    cc = ContrastiveConfig(**config["contrastive"])
    torch.manual_seed(cc.seed)
    model = build_encoder(EncoderConfig.from_dict(config["encoder"]))
    opt = torch.optim.AdamW(model.parameters(), lr=cc.lr, weight_decay=cc.weight_decay)
    steps_per_epoch = config["steps_per_epoch"]
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=cc.lr, total_steps=max(1, cc.epochs * steps_per_epoch), pct_start=0.1
    )
    start_epoch = 0
    ckpt = ray.train.get_checkpoint()
    if ckpt:
        with ckpt.as_directory() as d:
            state = torch.load(Path(d) / "state.pt", weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        start_epoch = state["epoch"] + 1
    model = ray.train.torch.prepare_model(model)
    device = ray.train.torch.get_device()
    shard = ray.train.get_dataset_shard("train")
    batch = cc.batch_size // ray.train.get_context().get_world_size()
    for epoch in range(start_epoch, cc.epochs):
        t0, losses = time.perf_counter(), []
        for step, b in enumerate(
            shard.iter_torch_batches(batch_size=batch, drop_last=True, device=device)
        ):
            if step >= steps_per_epoch:
                break
            groups = b["group"] if config["contrastive"]["positives"] == "labels" else None
            losses.append(
                contrastive_step(model, opt, b["view1"], b["view2"], cc.temperature, groups)
            )
            sched.step()
        metrics = {
            "epoch": epoch,
            "loss": float(np.mean(losses)) if losses else float("nan"),
            "steps": len(losses),
            "epoch_seconds": time.perf_counter() - t0,
        }
        with tempfile.TemporaryDirectory() as d:
            checkpoint = None
            if ray.train.get_context().get_world_rank() == 0:
                inner = model.module if hasattr(model, "module") else model
                torch.save(
                    {"model": inner.state_dict(), "optimizer": opt.state_dict(),
                     "scheduler": sched.state_dict(), "epoch": epoch},
                    Path(d) / "state.pt",
                )
                checkpoint = ray.train.Checkpoint.from_directory(d)
            ray.train.report(metrics, checkpoint=checkpoint)


def make_train_dataset(images: np.ndarray, cc: ContrastiveConfig, labels, clicks):
    """Ray Data pipeline: shuffled anchor ids -> positives + augmented views."""
    import ray

    neighbours = None
    if cc.positives == "neighbours":
        neighbours = nearest_neighbours(images.astype(np.float32) / 255.0, cc.neighbour_k)
    ds = ray.data.range(len(images), override_num_blocks=16).random_shuffle(seed=None)
    return ds.map_batches(
        ViewMaker,
        fn_constructor_kwargs={
            "images": images,
            "mode": cc.positives,
            "labels": labels,
            "neighbours": neighbours,
            "clicks": clicks,
            "neighbour_prob": cc.neighbour_prob,
            "aug_strength": cc.aug_strength,
            "seed": cc.seed,
        },
        batch_size=256,
        concurrency=1,
        num_cpus=0.5,
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--positives", default="neighbours", choices=["self", "neighbours", "labels", "clicks"])
    p.add_argument("--clicks", default=None, help="click log .npy/.csv of (query_id, clicked_id)")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--temperature", type=float, default=0.2)
    p.add_argument("--neighbour-k", type=int, default=5)
    p.add_argument("--neighbour-prob", type=float, default=0.5)
    p.add_argument("--aug-strength", type=float, default=1.0)
    p.add_argument("--max-steps-per-epoch", type=int, default=0)
    p.add_argument("--train-limit", type=int, default=0, help="use the first N train images")
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--embed-dim", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-workers", type=int, default=1)
    p.add_argument("--use-gpu", action="store_true")
    p.add_argument("--cpus-per-worker", type=float, default=1.0)
    p.add_argument("--torch-threads", type=int, default=0, help="0 = all cores of this machine")
    p.add_argument("--num-cpus", type=int, default=None, help="local Ray only")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--store", default="artifacts")
    p.add_argument("--name", default="visual_search")
    p.add_argument("--run-name", default=None, help="re-use to resume from its last checkpoint")
    p.add_argument("--runs-dir", default=os.path.abspath("var/ray_results"))
    p.add_argument("--index-kind", default="auto", choices=["auto", "flat", "ivf", "hnsw"])
    p.add_argument("--catalogue-limit", type=int, default=0)
    p.add_argument("--skip-index", action="store_true")
    return p.parse_args(argv)


def load_clicks(path: str | None) -> np.ndarray | None:
    if path is None:
        return None
    if path.endswith(".npy"):
        return np.load(path)
    return np.loadtxt(path, delimiter=",", dtype=np.int64, ndmin=2)


def run(a: argparse.Namespace) -> dict:
    import ray.train
    from ray.train.torch import TorchTrainer

    from train.common import init_ray

    init_ray(a.num_cpus)
    train = fm.load("train", a.data_dir)
    images, labels = train.images, train.labels
    if a.train_limit:
        images, labels = images[: a.train_limit], labels[: a.train_limit]
    cc = ContrastiveConfig(
        positives=a.positives, epochs=a.epochs, batch_size=a.batch_size, lr=a.lr,
        temperature=a.temperature, aug_strength=a.aug_strength, neighbour_k=a.neighbour_k,
        neighbour_prob=a.neighbour_prob, max_steps_per_epoch=a.max_steps_per_epoch, seed=a.seed,
    )
    enc = EncoderConfig(width=a.width, embed_dim=a.embed_dim)
    steps = len(images) // a.batch_size
    if a.max_steps_per_epoch:
        steps = min(steps, a.max_steps_per_epoch)
    torch_threads = a.torch_threads or os.cpu_count() or 1
    ds = make_train_dataset(images, cc, labels if a.positives == "labels" else None, load_clicks(a.clicks))
    run_name = a.run_name or f"visual_search-{a.positives}-{time.strftime('%Y%m%d-%H%M%S')}"
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={
            "contrastive": cc.to_dict(), "encoder": enc.to_dict(),
            "steps_per_epoch": steps, "torch_threads": torch_threads,
        },
        scaling_config=ray.train.ScalingConfig(
            num_workers=a.num_workers, use_gpu=a.use_gpu,
            resources_per_worker={"CPU": a.cpus_per_worker},
        ),
        run_config=ray.train.RunConfig(
            name=run_name, storage_path=a.runs_dir,
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
        ),
        datasets={"train": ds},
    )
    t0 = time.perf_counter()
    result = trainer.fit()
    train_seconds = time.perf_counter() - t0
    with result.checkpoint.as_directory() as d:
        state = torch.load(Path(d) / "state.pt", weights_only=False)
    model = build_encoder(enc)
    model.load_state_dict(state["model"])
    summary = {"run": run_name, "train_seconds": train_seconds, "final": result.metrics}
    if a.skip_index:
        return summary
    from train.index_catalogue import build_visual_search_artifact

    test = fm.load("test", a.data_dir)
    cat_images, cat_labels = test.images, test.labels
    if a.catalogue_limit:
        cat_images, cat_labels = cat_images[: a.catalogue_limit], cat_labels[: a.catalogue_limit]
    version = build_visual_search_artifact(
        ArtifactStore(a.store), a.name, model, enc,
        {**cc.to_dict(), "num_workers": a.num_workers, "use_gpu": a.use_gpu, "run": run_name},
        cat_images, cat_labels, IndexConfig(kind=a.index_kind),
        extra_metrics={"train_seconds": train_seconds, "final_loss": result.metrics.get("loss")},
        data_info={"train": f"fashion-mnist/train[:{len(images)}]",
                   "catalogue": f"fashion-mnist/test[:{len(cat_images)}]",
                   "labels_used": a.positives == "labels"},
    )
    summary["artifact"] = f"{a.name}/{version}"
    return summary


def main(argv: list[str] | None = None) -> None:
    print(json.dumps(run(parse_args(argv)), indent=2, default=str))


if __name__ == "__main__":
    main()
