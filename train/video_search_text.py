"""Train the text-video model of video search (contrastive, Ray Train) and write an artifact.

    python -m train.video_search_text [--steps 300] [--num-workers 1]

1. Frame features: Ray Data batch inference of ImageNet EfficientNet-Lite0 over the labelled
   images the synthetic clips are made of (``mlsd.data.synthetic_clips``; SYNTHETIC data).
2. Captions: every caption the clip sampler can write, embedded once by all-MiniLM-L6-v2; the
   1000 ImageNet class prompts too (the zero-shot projection).
3. Ray Train (``TorchTrainer``): batches of (clip, caption) pairs, in-batch negatives,
   softmax with temperature, cross-entropy both ways; only the residual heads train.
4. Artifact ``video_text``: heads + class prompt embeddings + config. ``--steps 0`` writes the
   zero-shot model (no video-text training).
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
from mlsd.data.synthetic_clips import ClipSampler, all_captions
from mlsd.text import SentenceEncoder
from mlsd.video_search.data import read_pairs
from mlsd.video_search.model import (
    PROMPT,
    FrameEncoder,
    VideoTextConfig,
    VideoTextModel,
    class_texts,
    imagenet_classes,
    write_video_text_artifact,
)
from train.common import add_train_args, fit, init_ray, report, resume, task_resources, unwrap
from train.video_search_frames import embed_videos


class FrameFeatures:
    """Ray Data UDF: grey 28x28 images -> EfficientNet-Lite0 features and class probabilities."""

    def __init__(self, size: int = 224):

        gpu_ids, threads = task_resources()  # the GPU / CPUs Ray gave this actor
        self.enc = FrameEncoder(num_threads=threads, gpu_ids=gpu_ids)
        self.size = size

    def __call__(self, batch: dict) -> dict:
        x = torch.as_tensor(np.stack(batch["image"]))[:, None].float()  # (B, 1, 28, 28)
        x = torch.nn.functional.interpolate(x, size=(self.size, self.size), mode="bilinear")
        frames = x.clamp(0, 255).round().byte().expand(-1, 3, -1, -1).permute(0, 2, 3, 1)
        feats, probs = self.enc(frames.contiguous().numpy())  # (B, 1280), (B, 1000)
        return {"feat": feats, "prob": probs.astype(np.float16), "label": batch["label"]}


def frame_features(images: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, ...]:

    ds = ray.data.from_items(
        [{"image": im, "label": int(y)} for im, y in zip(images, labels, strict=True)]
    )
    out = ds.map_batches(FrameFeatures, batch_size=64, concurrency=1).to_pandas()
    return (
        np.stack(out["feat"]).astype(np.float32),
        np.stack(out["prob"]).astype(np.float32),
        out["label"].to_numpy(),
    )


def pair_features(a: argparse.Namespace):
    """``--pairs``: every video decoded and embedded once by Ray Data (``--frames`` frames,
    time-pooled EfficientNet-Lite0 features and class probabilities), one row per pair.
    -> (feats (N, 1, 1280), probs (N, 1, 1000), captions, input report); a video that cannot
    be decoded drops its pairs, counted with the reason."""

    pairs, bad = read_pairs(a.pairs, a.max_bad_fraction)
    sample = {"fps": None, "num_frames": a.frames, "size": 224}
    videos, skipped = embed_videos(sorted({v for v, _ in pairs}), sample, a.embed_actors)
    by_path = {v["path"]: v for v in videos}
    why = {s["path"]: s["reason"] for s in skipped}
    rows = [(by_path[v], c) for v, c in pairs if v in by_path]
    for v, _ in pairs:
        if v not in by_path:
            bad.add(why.get(v, "not decoded"), f"{a.pairs}: video {v[:200]!r}")
    bad.check(a.pairs, a.max_bad_fraction)
    feats = np.stack([np.asarray(r["feat"], np.float32) for r, _ in rows])[:, None]
    probs = np.stack([np.asarray(r["prob"], np.float32) for r, _ in rows])[:, None]
    return feats, probs, [c for _, c in rows], bad.report()


def train_loop_per_worker(config: dict) -> None:

    task_resources()  # torch's threads = the CPUs Ray gave this worker
    feats, probs, labels, cap_emb, class_text = ray.get(config["data_ref"])
    rank = ray.train.get_context().get_world_rank()
    model = VideoTextModel(VideoTextConfig(**config["model"]), class_text)
    opt = torch.optim.AdamW(model.parameters(), lr=config["lr"], weight_decay=1e-4)
    state = resume(model, opt)  # after a lost worker: the last checkpoint (every 50 steps)
    start = int(state["step"]) + 1 if state else 0
    losses: list[float] = state["losses"].tolist() if state else []
    model = ray.train.torch.prepare_model(model)
    inner = unwrap(model)
    pairs = labels is None  # a user's (video, caption) pairs: row i of feats goes with caption i
    sampler = None if pairs else ClipSampler(labels, seed=config["seed"] + rank + start)
    rng = np.random.default_rng(config["seed"] + rank + start)
    F, P, C = torch.as_tensor(feats), torch.as_tensor(probs), torch.as_tensor(cap_emb)
    window = max(1, min(10, config["steps"] // 4))  # loss averaged over the first / last steps
    for step in range(start, config["steps"]):
        if pairs:  # feats (N, 1, D): one "frame" per row, the video's pooled features
            caps = rng.choice(len(feats), min(config["batch_size"], len(feats)), replace=False)
            idx = torch.as_tensor(caps)
        else:  # (B, k) images of a SYNTHETIC montage and the caption that describes it
            idx, caps = sampler.sample(config["batch_size"])
            idx = torch.as_tensor(idx)
        loss = inner.loss(F[idx].mean(1), P[idx].mean(1), C[torch.as_tensor(caps)])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        last = step == config["steps"] - 1
        if step % 50 == 0 or last:
            metrics = {
                "step": step,
                "resumed_from_step": start,
                "loss": losses[-1],
                "loss_first_steps": float(np.mean(losses[:window])),
                "loss_last_steps": float(np.mean(losses[-window:])),
            }
            state = {"model": inner.state_dict(), "optimizer": opt.state_dict(), "step": step}
            report(metrics, state | {"losses": torch.tensor(losses)})


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--steps", type=int, default=300, help="0 = zero-shot model, no training")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--train-images", type=int, default=3000)
    p.add_argument("--seed", type=int, default=0)
    add_train_args(p, "video_text")
    p.add_argument("--text-model", default="offline:all-MiniLM-L6-v2")
    p.add_argument(
        "--prompts",
        choices=["ensemble", "single"],
        default="ensemble",
        help="class texts: prompt ensemble over synonyms + hypernyms, or one prompt per class",
    )
    p.add_argument(
        "--class-temperature",
        type=float,
        default=2.0,
        help="zero-shot: class probabilities ** (1/T); chosen on the dev queries "
        "(bench.video_retrieval_eval)",
    )
    p.add_argument("--data-dir", default=None, help="Fashion-MNIST folder (the demo)")
    g = p.add_argument_group("your own (video, caption) pairs (README, 'Your own data')")
    g.add_argument("--pairs", default=None, help="CSV / JSONL with video (path / URI), caption")
    g.add_argument("--frames", type=int, default=8, help="frames sampled per video")
    g.add_argument("--embed-actors", type=int, default=1)
    g.add_argument("--max-bad-fraction", type=float, default=0.5)
    p.add_argument("--store", default="artifacts")
    p.add_argument("--name", default="video_text")
    p.add_argument("--version", default=None)
    return p.parse_args(argv)


def run(a: argparse.Namespace) -> dict:

    init_ray(a.num_cpus)
    t0 = time.perf_counter()
    text = SentenceEncoder(a.text_model)
    class_text = class_texts(text, a.prompts)
    model = VideoTextModel(VideoTextConfig(class_temperature=a.class_temperature), class_text)
    final: dict = {}
    captions = all_captions()
    input_report = None
    if a.pairs:
        feats, probs, captions, input_report = pair_features(a)
        labels = None
    cap_emb = text.encode(captions)  # the training texts, and drift's reference
    if a.steps > 0:
        if not a.pairs:
            train = fm.load("train", a.data_dir)
            feats, probs, labels = frame_features(
                train.images[: a.train_images], train.labels[: a.train_images]
            )
        config = {
            "data_ref": ray.put((feats, probs, labels, cap_emb, class_text)),
            "model": model.cfg.to_dict(),
            "steps": a.steps,
            "batch_size": a.batch_size // a.num_workers,
            "lr": a.lr,
            "seed": a.seed,
        }
        run = fit(train_loop_per_worker, config, a, num_to_keep=1)
        final = run.metrics
        model.load_state_dict(run.state["model"])
    prompts = [PROMPT.format(c) for c in imagenet_classes()]  # drift: the texts it knows
    version = write_video_text_artifact(
        ArtifactStore(a.store),
        a.name,
        model,
        reference=(list(captions) + prompts, np.concatenate([cap_emb, text.encode(prompts)])),
        config={
            "text_model": a.text_model,
            "kind": "contrastive" if a.steps > 0 else "zero-shot",
            "prompts": a.prompts,
            "steps": a.steps,
            "batch_size": a.batch_size,
            "lr": a.lr,
        },
        data={
            "train": "none (zero-shot)"
            if a.steps <= 0
            else f"{a.pairs} ({len(captions)} pairs)"
            if a.pairs
            else f"SYNTHETIC clips from fashion-mnist/train[:{a.train_images}]",
            "input": input_report,
        },
        metrics={
            "final_loss": final.get("loss"),
            "loss_first_steps": final.get("loss_first_steps"),
            "loss_last_steps": final.get("loss_last_steps"),
            "seconds": time.perf_counter() - t0,
        },
        version=a.version,
    )
    return {"artifact": f"{a.name}/{version}", "final": final}


def main(argv: list[str] | None = None) -> None:
    print(json.dumps(run(parse_args(argv)), indent=2, default=str))


if __name__ == "__main__":
    main()
