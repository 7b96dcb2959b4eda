"""Blur a folder (or URI) of images and videos with Ray Data.

    python -m train.blur_batch --input street/ --output blurred/
    ray job submit --working-dir . -- python -m train.blur_batch --input s3://b/raw \
        --output s3://b/blurred --detector-actors 4 --gpus-per-actor 1

Two shapes of the same stages (``--stages``):

- ``split`` (the default with GPUs): read (CPU tasks: decode, EXIF orientation) -> detect (an
  actor pool holding the detector, on GPUs) -> blur + write (CPU tasks: metadata-free JPEG to
  the output store), so the GPUs only detect while CPUs decode and encode around them;
- ``fused`` (the default on CPUs): each detector actor reads, detects, blurs and writes its
  batch of files; with no accelerator to keep busy, moving every decoded image between
  processes through the object store costs more than the stages gain (bench/blur_batch.py).

Videos are blurred frame by frame in the detector actors (boxes carried over a few frames),
re-encoded as H.264. Broken files are skipped and listed with a reason; a re-run skips outputs
already written. Prints images/s.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import fsspec
import numpy as np
import ray

from mlsd.artifacts import ArtifactStore
from mlsd.blurring.artifact import pin_members
from mlsd.blurring.backends import SERVED_MEMBERS as DEFAULT_MEMBERS
from mlsd.blurring.backends import build_backend
from mlsd.blurring.blur import BlurConfig, encode_jpeg
from mlsd.blurring.blur import blur as do_blur
from mlsd.blurring.pipeline import Detections, detect_image
from mlsd.blurring.video import blur_video
from mlsd.image import InvalidImage, decode_image
from mlsd.video import VideoError
from train.common import init_ray, task_resources

IMAGE_EXT = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"}
VIDEO_EXT = {".mp4", ".mov", ".mkv", ".webm", ".avi"}


def list_inputs(input_uri: str, output_uri: str) -> tuple[list[dict], int]:
    """Input files (relative names) whose output does not exist yet, and how many were skipped."""

    fs, root = fsspec.core.url_to_fs(input_uri)
    out_fs, out_root = fsspec.core.url_to_fs(output_uri)
    root = root.rstrip("/")
    rows, skipped = [], 0
    for path in sorted(fs.find(root)):
        rel = path[len(root) + 1 :]
        ext = os.path.splitext(rel)[1].lower()
        if ext not in IMAGE_EXT | VIDEO_EXT:
            continue
        kind = "video" if ext in VIDEO_EXT else "image"
        suffix = "mp4" if kind == "video" else "jpg"
        out = f"{out_root.rstrip('/')}/{os.path.splitext(rel)[0]}.{suffix}"
        if out_fs.exists(out):
            skipped += 1
            continue
        rows.append(
            {
                "input": fs.unstrip_protocol(path),
                "output": out_fs.unstrip_protocol(out),
                "kind": kind,
            }
        )
    return rows, skipped


def read_image(row: dict, max_pixels: int) -> dict:
    """CPU task: bytes -> RGB (EXIF applied), or the reason it cannot be read."""

    row = dict(row, image=None, error="")
    if row["kind"] == "video":
        return row
    try:
        with fsspec.open(row["input"], "rb") as f:
            data = f.read()
        row["image"] = np.asarray(decode_image(data, len(data) + 1, max_pixels).convert("RGB"))
    except (InvalidImage, OSError) as e:
        row["error"] = str(e)[:200]
    return row


class DetectActor:
    """Holds the detector (built once per actor, on its GPU if it has one)."""

    def __init__(
        self, members: list, store: str, long_side: int, blur: dict, fusion: str = "enclose"
    ):

        gpu_ids, threads = task_resources()
        device = "cuda" if gpu_ids else "cpu"
        self.detector = build_backend(
            members, ArtifactStore(store), device, threads, gpu_ids, fusion=fusion
        )
        self.long_side, self.blur, self.blur_spec = long_side, BlurConfig(**blur), blur

    def _detect(self, image):

        return detect_image(self.detector, image, self.long_side)

    def __call__(self, row: dict) -> dict:
        return self.detect_row(row)

    def detect_row(self, row: dict) -> dict:
        if row["error"]:
            return dict(row, boxes=np.zeros((0, 4), np.float32), labels=np.zeros(0, np.int64))
        if row["kind"] == "video":
            return self._video(row)
        det = self._detect(row["image"])
        return dict(row, boxes=det.boxes, labels=det.labels)

    def _video(self, row: dict) -> dict:

        out = dict(row, boxes=np.zeros((0, 4), np.float32), labels=np.zeros(0, np.int64))
        with tempfile.TemporaryDirectory() as d:
            src, dst = os.path.join(d, "in"), os.path.join(d, "out.mp4")
            try:
                with fsspec.open(row["input"], "rb") as f, open(src, "wb") as g:
                    g.write(f.read())
                stats = blur_video(src, dst, self._detect, self.blur)
                with open(dst, "rb") as f, fsspec.open(row["output"], "wb") as g:
                    g.write(f.read())
                out["written"] = True
                out["frames"] = stats["frames"]
            except (VideoError, OSError, ValueError) as e:
                out["error"] = str(e)[:200]
        return out


class FusedActor(DetectActor):
    """``--stages fused``: a batch of files read, detected, blurred and written in one actor."""

    def __init__(
        self,
        members: list,
        store: str,
        long_side: int,
        blur: dict,
        fusion: str = "enclose",
        max_pixels: int = 100_000_000,
    ):
        super().__init__(members, store, long_side, blur, fusion)
        self.max_pixels = max_pixels

    def __call__(self, batch: dict) -> dict:
        out: dict[str, list] = {k: [] for k in ("input", "output", "kind", "error", "boxes")}
        for i in range(len(batch["input"])):
            row = {k: batch[k][i] for k in ("input", "output", "kind")}
            done = blur_and_write(self.detect_row(read_image(row, self.max_pixels)), self.blur_spec)
            for k in out:
                out[k].append(done[k])
        return out


def blur_and_write(row: dict, blur: dict) -> dict:
    """CPU task: blur the image with its boxes and write the metadata-free JPEG."""

    result = {
        "input": row["input"],
        "output": row["output"],
        "kind": row["kind"],
        "error": row["error"],
        "boxes": int(len(row["boxes"])),
    }
    if row["kind"] == "video" or row["error"]:
        return result
    det = Detections(row["boxes"], np.ones(len(row["boxes"]), np.float32), row["labels"])
    jpeg = encode_jpeg(do_blur(row["image"], det, BlurConfig(**blur)))
    fs, path = fsspec.core.url_to_fs(row["output"])
    fs.makedirs(os.path.dirname(path), exist_ok=True)
    with fs.open(path, "wb") as f:
        f.write(jpeg)
    return result


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--input", required=True)
    p.add_argument("--output", required=True)
    p.add_argument(
        "--detector",
        default=json.dumps(DEFAULT_MEMBERS),
        help="JSON list of detector members (default: what /blurring serves; "
        "needs the blurring_fcos artifact)",
    )
    p.add_argument("--fusion", default="enclose", choices=["nms", "wbf", "enclose"])
    p.add_argument("--store", default="artifacts")
    p.add_argument("--long-side", type=int, default=1024)
    p.add_argument("--detector-actors", type=int, default=1)
    p.add_argument("--cpus-per-actor", type=float, default=1.0)
    p.add_argument("--gpus-per-actor", type=float, default=0.0)
    p.add_argument("--max-pixels", type=int, default=100_000_000)
    p.add_argument(
        "--stages",
        choices=["auto", "fused", "split"],
        default="auto",
        help="auto: split with --gpus-per-actor, fused without",
    )
    p.add_argument("--batch-size", type=int, default=8, help="files per actor call (fused)")
    p.add_argument("--num-cpus", type=int, default=None, help="local Ray only")
    return p.parse_args(argv)


def run(a: argparse.Namespace) -> dict:

    # the detectors' artifacts checked and pinned before Ray starts: one version for every actor
    members = pin_members(ArtifactStore(a.store), json.loads(a.detector))
    init_ray(a.num_cpus)
    rows, skipped = list_inputs(a.input, a.output)
    t0 = time.perf_counter()
    results = []
    if rows:
        blur_cfg: dict = {}
        actor = {
            "members": members,
            "store": a.store,
            "long_side": a.long_side,
            "blur": blur_cfg,
            "fusion": a.fusion,
        }
        pool = {
            "concurrency": a.detector_actors,
            "num_cpus": a.cpus_per_actor,
            "num_gpus": a.gpus_per_actor or None,
        }
        stages = a.stages if a.stages != "auto" else ("split" if a.gpus_per_actor else "fused")
        if stages == "fused":
            blocks = max(1, min(len(rows) // a.batch_size, 4 * a.detector_actors))
            ds = ray.data.from_items(rows, override_num_blocks=min(len(rows), blocks)).map_batches(
                FusedActor,
                batch_size=a.batch_size,
                batch_format="numpy",
                fn_constructor_kwargs=actor | {"max_pixels": a.max_pixels},
                **pool,
            )
        else:
            ds = (
                ray.data.from_items(rows, override_num_blocks=min(len(rows), 64))
                .map(read_image, fn_kwargs={"max_pixels": a.max_pixels})
                .map(DetectActor, fn_constructor_kwargs=actor, **pool)
                .map(blur_and_write, fn_kwargs={"blur": blur_cfg})
            )
        results = ds.take_all()
    seconds = time.perf_counter() - t0
    failed = [{"input": r["input"], "reason": r["error"]} for r in results if r["error"]]
    done = [r for r in results if not r["error"]]
    return {
        "detector": members,
        "written": len(done),
        "skipped_existing": skipped,
        "failed": failed,
        "boxes": int(sum(r["boxes"] for r in done)),
        "seconds": seconds,
        "files_per_s": len(done) / seconds if seconds else 0.0,
    }


def main(argv=None) -> None:
    print(json.dumps(run(parse_args(argv)), indent=2))


if __name__ == "__main__":
    main()
