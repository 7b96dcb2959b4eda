"""The video pipeline on Ray Data: read a folder or URI of videos, decode and sample frames in
parallel blocks, and write frames or video embeddings. Files that are not decodable videos are
skipped and reported (path + reason) in the summary, never a crash of the job.

    python -m train.video_search_frames --input data/videos --out var/video_frames --mode frames
    python -m train.video_search_frames --input data/videos --mode catalogue --metadata videos.json

Modes: ``frames`` writes one parquet row per sampled frame (video, time, uint8 frame);
``embeddings`` writes one row per video (time-pooled EfficientNet-Lite0 features and class
probabilities: model-independent, every text-video model version projects them itself);
``catalogue`` writes those as a ``video_catalogue`` artifact the video search app serves.

How it scales: one task per video (``batch_size=1`` over a list of paths), so Ray Data
spreads decoding over every CPU of the cluster with no coordination; embedding runs in an
actor pool (``--embed-actors``, GPUs via ``--embed-gpus``) fed by the decoding tasks.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import fsspec
import numpy as np
import pandas as pd
import ray

from mlsd.artifacts import ArtifactStore
from mlsd.data.sources import list_files
from mlsd.video import SampleConfig, VideoError, decode_sampled
from mlsd.video_search.catalogue import write_catalogue
from mlsd.video_search.model import FrameEncoder, pool_video
from train.common import init_ray, task_resources

VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v", ".mpg", ".mpeg")


def list_videos(src: str) -> list[str]:
    """A folder, an fsspec URI (``s3://bucket/videos``), a glob, or a text file of paths."""
    return list_files(src, VIDEO_EXTENSIONS)


def _read(path: str):
    if "://" not in path:
        return path

    with fsspec.open(path, "rb") as f:
        return f.read()


def decode_videos(batch: dict, sample: dict) -> dict:
    """Ray Data UDF (tasks): videos -> one row each with all sampled frames (N, S, S, 3) and
    their times; a file that fails becomes a row with 0 frames and the reason."""

    cfg = SampleConfig(**sample)
    out = {"path": [], "frames": [], "times": [], "error": []}
    for path in batch["path"]:
        frames = np.zeros((0, cfg.size, cfg.size, 3), np.uint8)
        times, error = np.zeros(0), ""
        try:
            v = decode_sampled(_read(path), cfg)
            frames, times = v.frames, v.times
        except VideoError as e:
            error = f"{e.reason}: {e.detail}"
        except Exception as e:  # anything else about one file must not end the job
            error = f"unreadable: {type(e).__name__}: {e}"
        out["path"].append(path)
        out["frames"].append(frames)
        out["times"].append(times)
        out["error"].append(error)
    return {
        "path": np.array(out["path"], dtype=object),
        "frames": _column(out["frames"]),
        "times": _column(out["times"]),
        "error": np.array(out["error"], dtype=object),
    }


def _column(arrays: list[np.ndarray]) -> np.ndarray:
    """Equal shapes (always, with one video per batch) -> one tensor, stored by Ray Data as
    an Arrow tensor column with no pickling; ragged -> an object column."""
    if len({a.shape for a in arrays}) == 1:
        return np.stack(arrays)
    return np.array(arrays + [None], dtype=object)[:-1]


def explode_frames(row: dict) -> list[dict]:
    """One row per sampled frame (frames mode)."""
    return [
        {"path": row["path"], "time": float(t), "frame": f}
        for t, f in zip(row["times"], row["frames"], strict=True)
    ]


class EmbedVideos:
    """Ray Data UDF (actors): a video's frames -> time-pooled features and probabilities."""

    def __init__(self, threads: int = 0, device: str = "auto"):

        gpu_ids, assigned = task_resources()  # the GPU / CPUs Ray gave this actor
        self.enc = FrameEncoder(device=device, num_threads=threads or assigned, gpu_ids=gpu_ids)

    def __call__(self, batch: dict) -> dict:

        feats, probs, counts = [], [], []
        for frames in batch["frames"]:
            if len(frames):
                f, p = pool_video(*self.enc(np.asarray(frames)))
            else:
                f, p = np.zeros(1280, np.float32), np.zeros(1000, np.float32)
            feats.append(f)
            probs.append(p)
            counts.append(len(frames))
        return {
            "path": batch["path"],
            "n_frames": np.array(counts),
            "feat": np.stack(feats).astype(np.float32),
            "prob": np.stack(probs).astype(np.float32),
            "error": batch["error"],
        }


def decoded_dataset(paths: list[str], sample: dict):

    ds = ray.data.from_items([{"path": p} for p in paths], override_num_blocks=max(1, len(paths)))
    return ds.map_batches(decode_videos, fn_kwargs={"sample": sample}, batch_size=1)


def embed_videos(
    paths: list[str], sample: dict, actors: int = 1, gpus: float = 0.0, threads: int = 1
) -> tuple[list[dict], list[dict]]:
    """-> (videos with pooled features, skipped files with reasons)."""
    ds = decoded_dataset(paths, sample).map_batches(
        EmbedVideos,
        fn_constructor_kwargs={"threads": threads, "device": "cuda" if gpus else "auto"},
        batch_size=1,
        concurrency=actors,
        num_gpus=gpus,
    )
    videos, skipped = [], []
    for row in ds.iter_rows():
        if row["error"]:
            skipped.append({"path": row["path"], "reason": row["error"]})
        else:
            videos.append(row)
    return sorted(videos, key=lambda r: r["path"]), sorted(skipped, key=lambda r: r["path"])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--input", required=True, help="folder, fsspec URI, glob or .txt of paths")
    p.add_argument("--mode", default="frames", choices=["frames", "embeddings", "catalogue"])
    p.add_argument("--out", default="var/video_frames", help="output folder (frames/embeddings)")
    p.add_argument("--fps", type=float, default=1.0)
    p.add_argument("--num-frames", type=int, default=None, help="fixed frames per video")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--max-frames", type=int, default=64)
    p.add_argument("--embed-actors", type=int, default=1)
    p.add_argument("--embed-gpus", type=float, default=0.0)
    p.add_argument("--embed-threads", type=int, default=0, help="0 = the CPUs of each actor")
    p.add_argument("--metadata", default=None, help="catalogue: JSON {file name: {title, ...}}")
    p.add_argument("--store", default="artifacts")
    p.add_argument("--name", default="video_catalogue")
    p.add_argument(
        "--live-log",
        default="var/video_search/videos.sqlite",
        help="catalogue: the serving log whose edits and deletions the new version takes in "
        "(a state store URL or path; one that cannot be read fails the job; 'none': without)",
    )
    p.add_argument("--num-cpus", type=int, default=None, help="local Ray only")
    return p.parse_args(argv)


def run(a: argparse.Namespace) -> dict:

    init_ray(a.num_cpus)
    t0 = time.perf_counter()
    paths = list_videos(a.input)
    sample = {
        "fps": None if a.num_frames else a.fps,
        "num_frames": a.num_frames,
        "size": a.size,
        "max_frames": a.max_frames,
    }
    summary: dict = {"input": a.input, "videos": len(paths), "sample": sample}
    if a.mode == "frames":
        decoded = decoded_dataset(paths, sample).materialize()
        errors = decoded.filter(lambda r: bool(r["error"])).select_columns(["path", "error"])
        frames = decoded.filter(lambda r: not r["error"]).flat_map(explode_frames)
        frames.write_parquet(a.out)
        summary.update(
            frames=frames.count(),
            skipped=[{"path": r["path"], "reason": r["error"]} for r in errors.iter_rows()],
            out=a.out,
        )
    else:
        videos, skipped = embed_videos(paths, sample, a.embed_actors, a.embed_gpus, a.embed_threads)
        summary.update(embedded=len(videos), skipped=skipped)
        if a.mode == "embeddings":
            Path(a.out).mkdir(parents=True, exist_ok=True)
            pd.DataFrame(videos).to_parquet(Path(a.out) / "videos.parquet")
            summary["out"] = a.out
        else:
            meta = json.loads(Path(a.metadata).read_text()) if a.metadata else {}
            version = write_catalogue(
                ArtifactStore(a.store),
                a.name,
                videos,
                meta,
                sample,
                live_log=None if a.live_log in ("", "none") else a.live_log,
            )
            summary["artifact"] = f"{a.name}/{version}"
    summary["seconds"] = time.perf_counter() - t0
    return summary


def main(argv: list[str] | None = None) -> None:
    print(json.dumps(run(parse_args(argv)), indent=2, default=str))


if __name__ == "__main__":
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "0")
    main()
