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
import time

import numpy as np
import ray
import ray.train
import ray.train.torch
import torch

from mlsd.artifacts import ArtifactStore
from mlsd.data import fashion_mnist as fm
from mlsd.image import images_to_tensor
from mlsd.visual_search.artifact import build_visual_search_artifact
from mlsd.visual_search.contrastive import (
    ContrastiveConfig,
    PairMaker,
    PositiveSampler,
    contrastive_step,
    embed_all,
    nearest_neighbours,
)
from mlsd.visual_search.model import ConvEncoder, EncoderConfig, build_encoder, trainable_part
from train.common import add_train_args, fit, init_ray, report, resume, task_resources, unwrap
from train.visual_search_index import embed_with_ray_data
from train.visual_search_photos import add_index_args, add_photo_args, index_config, train_photos


def train_loop_per_worker(config: dict) -> None:
    """Runs on every Ray Train worker: positives + augmentation, NT-Xent, report per epoch."""

    if config.get("torch_threads"):
        torch.set_num_threads(int(config["torch_threads"]))
    else:
        task_resources()  # torch's threads = the CPUs Ray gave this worker
    cc = ContrastiveConfig(**config["contrastive"])
    torch.manual_seed(cc.seed)
    device = ray.train.torch.get_device()
    images_np, labels, clicks = ray.get(config["data_ref"])
    images = images_to_tensor(images_np)  # (N, C, H, W), the memory bank positives come from
    neighbours = None
    if cc.positives == "neighbours":
        neighbours = nearest_neighbours(images_np.astype(np.float32) / 255.0, cc.neighbour_k)
    sampler = PositiveSampler(
        cc.positives,
        len(images),
        labels,
        neighbours,
        clicks,
        cc.neighbour_prob,
        seed=cc.seed + ray.train.get_context().get_world_rank(),
    )
    pairs = PairMaker(images, sampler, cc.augment, cc.aug_strength, seed=cc.seed)
    model = ConvEncoder(EncoderConfig.from_dict(config["encoder"]))
    opt = torch.optim.AdamW(model.parameters(), lr=cc.lr, weight_decay=cc.weight_decay)
    steps_per_epoch = config["steps_per_epoch"]
    start_epoch = 0
    state = resume(model, opt)  # same run name and storage path
    if state:
        if state.get("neighbours") is not None:
            sampler.neighbours = state["neighbours"].numpy()
        start_epoch = state["epoch"] + 1
    # one-cycle over the run's epochs; a resumed run (possibly with more epochs) continues it
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt,
        max_lr=cc.lr,
        total_steps=max(1, cc.epochs * steps_per_epoch),
        pct_start=0.1,
        last_epoch=start_epoch * steps_per_epoch - 1,
    )
    model = ray.train.torch.prepare_model(model)
    bf16 = cc.bf16 and (device.type == "cuda" or _cpu_has_bf16())
    shard = ray.train.get_dataset_shard("train")
    batch = cc.batch_size // ray.train.get_context().get_world_size()
    for epoch in range(start_epoch, cc.epochs):
        t0, losses = time.perf_counter(), []
        refreshed = False
        if (
            cc.positives == "neighbours"
            and cc.refresh_neighbours_every
            and epoch > 0
            and epoch % cc.refresh_neighbours_every == 0
        ):
            emb = embed_all(model, images, bf16=bf16)  # re-mine in the model's own space
            sampler.neighbours = nearest_neighbours(emb, cc.neighbour_k, pca_dim=0)
            refreshed = True
        batches = shard.iter_batches(
            batch_size=batch, drop_last=True, local_shuffle_buffer_size=max(4 * batch, 8192)
        )
        for step, b in enumerate(batches):
            if step >= steps_per_epoch:
                break
            v1, v2, groups = pairs(b["id"], device)
            losses.append(contrastive_step(model, opt, v1, v2, cc.temperature, groups, bf16))
            sched.step()
        metrics = {
            "epoch": epoch,
            "resumed_from_epoch": start_epoch,  # 0 for a fresh run
            "epochs_this_run": epoch - start_epoch + 1,
            "loss": float(np.mean(losses)) if losses else float("nan"),
            "steps": len(losses),
            "epoch_seconds": time.perf_counter() - t0,
            "refreshed_neighbours": refreshed,
        }
        nb = None if sampler.neighbours is None else torch.as_tensor(sampler.neighbours)
        state = {"model": unwrap(model).state_dict(), "optimizer": opt.state_dict()}
        report(metrics, state | {"scheduler": sched.state_dict(), "epoch": epoch, "neighbours": nb})


def _cpu_has_bf16() -> bool:
    """bfloat16 autocast pays on CPUs with native bf16 dot products (AVX-512 BF16 / AMX)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
        return "avx512_bf16" in flags or "amx_bf16" in flags
    except OSError:
        return False


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--positives", default="neighbours", choices=["self", "neighbours", "labels", "clicks"]
    )
    p.add_argument("--clicks", default=None, help="click log .npy/.csv of (query_id, clicked_id)")
    p.add_argument("--epochs", type=int, default=None, help="default 6 (demo), 60 (photos)")
    p.add_argument("--batch-size", type=int, default=None, help="default 512 / 256")
    p.add_argument("--lr", type=float, default=None, help="default 2e-3 / 1e-3")
    p.add_argument("--temperature", type=float, default=0.2)
    p.add_argument("--neighbour-k", type=int, default=5)
    p.add_argument("--neighbour-prob", type=float, default=None, help="default 0.7 / 0.5")
    p.add_argument("--aug-strength", type=float, default=1.0)
    p.add_argument("--augment", default="batched", choices=["batched", "torchvision"])
    p.add_argument("--refresh-neighbours-every", type=int, default=0)
    p.add_argument("--no-bf16", action="store_true", help="train in float32")
    p.add_argument(
        "--fuse-pretrained",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="serve our CNN fused with the frozen ImageNet EfficientNet-Lite0",
    )
    p.add_argument("--pretrained-size", type=int, default=160)
    p.add_argument("--fusion-weight", type=float, default=0.5)
    p.add_argument("--max-steps-per-epoch", type=int, default=0)
    p.add_argument("--train-limit", type=int, default=0, help="use the first N train images")
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--embed-dim", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    add_train_args(p, "visual_search-<positives>")
    p.add_argument(
        "--torch-threads", type=int, default=0, help="0 = the CPUs Ray assigns each worker"
    )
    p.add_argument("--data-dir", default=None, help="Fashion-MNIST folder (the demo)")
    g = p.add_argument_group("your own photos (README, 'Your own data')")
    add_photo_args(g)
    g.add_argument("--catalogue", default=None, help="photos to index (default: --images)")
    g.add_argument("--image-size", type=int, default=224, help="the encoder's input side")
    g.add_argument("--fit", default="crop", choices=["crop", "pad"])
    g.add_argument("--views", type=int, default=6, help="augmented views per photo")
    g.add_argument("--hidden-dim", type=int, default=1024)
    p.add_argument("--store", default="artifacts")
    p.add_argument("--name", default="visual_search")
    add_index_args(p)
    p.add_argument("--catalogue-limit", type=int, default=0)
    p.add_argument("--skip-index", action="store_true")
    a = p.parse_args(argv)
    photos = a.images is not None
    a.run_prefix = "visual_search-photos" if photos else f"visual_search-{a.positives}"
    for key, demo, own in (
        ("epochs", 6, 60),
        ("batch_size", 512, 256),
        ("lr", 2e-3, 1e-3),
        ("neighbour_prob", 0.7, 0.5),
    ):
        if getattr(a, key) is None:
            setattr(a, key, own if photos else demo)
    return a


def load_clicks(path: str | None) -> np.ndarray | None:
    if path is None:
        return None
    if path.endswith(".npy"):
        return np.load(path)
    return np.loadtxt(path, delimiter=",", dtype=np.int64, ndmin=2)


def run(a: argparse.Namespace) -> dict:
    if a.images is not None:  # a user's own photos
        return train_photos(a)

    init_ray(a.num_cpus)
    train = fm.load("train", a.data_dir)
    images, labels = train.images, train.labels
    if a.train_limit:
        images, labels = images[: a.train_limit], labels[: a.train_limit]
    cc = ContrastiveConfig(
        positives=a.positives,
        epochs=a.epochs,
        batch_size=a.batch_size,
        lr=a.lr,
        temperature=a.temperature,
        aug_strength=a.aug_strength,
        neighbour_k=a.neighbour_k,
        neighbour_prob=a.neighbour_prob,
        max_steps_per_epoch=a.max_steps_per_epoch,
        seed=a.seed,
        refresh_neighbours_every=a.refresh_neighbours_every,
        augment=a.augment,
        bf16=not a.no_bf16,
    )
    enc = EncoderConfig(
        arch="fusion" if a.fuse_pretrained else "convnet",
        width=a.width,
        embed_dim=a.embed_dim,
        pretrained_size=a.pretrained_size,
        fusion_weight=a.fusion_weight,
    )
    steps = len(images) // a.batch_size
    if a.max_steps_per_epoch:
        steps = min(steps, a.max_steps_per_epoch)
    torch_threads = a.torch_threads  # 0: each worker uses the CPUs Ray assigned it
    # Ray Data streams the shuffled anchor ids to the workers (sharded across them); the
    # images themselves travel once, through the object store, as the positives' memory bank.
    ds = ray.data.range(len(images), override_num_blocks=16).randomize_block_order(seed=a.seed)
    data_ref = ray.put((images, labels if a.positives == "labels" else None, load_clicks(a.clicks)))
    config = {
        "contrastive": cc.to_dict(),
        "encoder": enc.to_dict(),
        "steps_per_epoch": steps,
        "torch_threads": torch_threads,
        "data_ref": data_ref,
    }
    run = fit(train_loop_per_worker, config, a, datasets={"train": ds})
    state, run_name, train_seconds = run.state, run.run_name, run.seconds
    model = build_encoder(enc)
    trainable_part(model).load_state_dict(state["model"])
    summary = {"run": run_name, "train_seconds": train_seconds, "final": run.metrics}
    if a.skip_index:
        return summary

    test = fm.load("test", a.data_dir)
    cat_images, cat_labels = test.images, test.labels
    if a.catalogue_limit:
        cat_images, cat_labels = cat_images[: a.catalogue_limit], cat_labels[: a.catalogue_limit]
    version = build_visual_search_artifact(
        ArtifactStore(a.store),
        a.name,
        model,
        enc,
        {**cc.to_dict(), "num_workers": a.num_workers, "use_gpu": a.use_gpu, "run": run_name},
        cat_images,
        cat_labels,
        index_config(a),
        embed=embed_with_ray_data,
        extra_metrics={"train_seconds": train_seconds, "final_loss": run.metrics.get("loss")},
        data_info={
            "train": f"fashion-mnist/train[:{len(images)}]",
            "catalogue": f"fashion-mnist/test[:{len(cat_images)}]",
            "labels_used": a.positives == "labels",
        },
    )
    summary["artifact"] = f"{a.name}/{version}"
    return summary


def main(argv: list[str] | None = None) -> None:
    print(json.dumps(run(parse_args(argv)), indent=2, default=str))


if __name__ == "__main__":
    main()
