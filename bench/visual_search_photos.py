"""Visual search on real RGB photos (the Oxford flowers, or any labelled folder): quality of
the encoder trained on your photos, and indexing throughput.

Split: :func:`mlsd.visual_search.data.holdout_split` by file name (60 / 20 / 20). The encoder
trains self-supervised (no labels) on the train part through the real job
(``train.visual_search --images ... --subset train``); the evaluation part (``--split val`` to
choose settings, ``--split test`` once to report) is the catalogue, each photo queries all the
others, relevant = same label (the anchors' protocol, :func:`evaluate_embeddings`). Rows, all
on the same photos in the same run: raw pixels, the frozen ImageNet EfficientNet-Lite0, the
trained encoder (fp32 and int8) and the served demo model (Fashion-MNIST's 28 px greyscale,
through its own preprocessing) if its artifact exists.

Throughput: ``train.visual_search_index --images`` on every photo of the folder, Ray limited
to 1 and then 2 CPUs (reading in tasks, decoding + the model in one actor per CPU), and the
time 1M photos would take at that rate.

    python -m bench.visual_search_photos --split test
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import numpy as np
import ray
import torch

from mlsd.artifacts import ArtifactError, ArtifactStore
from mlsd.runtime import make_runner
from mlsd.visual_search.data import decode_photo, read_bytes, read_photo_source
from mlsd.visual_search.evaluation import efficientnet_embeddings, evaluate_embeddings
from mlsd.visual_search.features import ImagePreprocessor
from mlsd.visual_search.model import EncoderConfig
from train import visual_search, visual_search_index

FLOWERS = "../shared/data/oxford_flowers_train"
COLUMNS = ("MRR", "P@10", "R@10", "mAP@10", "nDCG@10")


def _embed(runner, x: np.ndarray, batch: int = 64) -> np.ndarray:
    return np.concatenate([runner.run(x[i : i + batch]) for i in range(0, len(x), batch)])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--images", default=f"{FLOWERS}/images")
    p.add_argument("--labels", default=f"{FLOWERS}/labels.csv")
    p.add_argument("--label-column", default="class_name")
    p.add_argument("--split", default="val", choices=["val", "test"])
    p.add_argument("--store", default=None, help="artifact store (default: a temp folder)")
    p.add_argument("--demo-store", default="artifacts", help="where the served demo model is")
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--views", type=int, default=6)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--skip-train", action="store_true", help="use the store's latest version")
    p.add_argument("--skip-throughput", action="store_true")
    p.add_argument("--skip-quality", action="store_true")
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)

    store_dir = a.store or tempfile.mkdtemp(prefix="flowers-store-")
    common = ["--images", a.images, "--labels", a.labels, "--label-column", a.label_column]
    summary = {}
    if not a.skip_train:
        args = [*common, "--subset", "train", "--epochs", str(a.epochs), "--views", str(a.views)]
        args += ["--image-size", str(a.image_size), "--store", store_dir, "--num-cpus", "2"]
        summary["train"] = visual_search.run(visual_search.parse_args(args))
        ray.shutdown()
    art = ArtifactStore(store_dir).load("visual_search")
    cfg = EncoderConfig.from_dict(art.config["encoder"])
    if not a.skip_quality:
        summary["quality"] = quality(a, art, cfg)
    if not a.skip_throughput:
        summary |= throughput(a, store_dir, cfg, common)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(summary, f, indent=2, default=str)


def quality(a: argparse.Namespace, art, cfg: EncoderConfig) -> list[dict]:
    """The representations' table on the evaluation part."""
    src = read_photo_source(a.images, a.labels, a.label_column, subset=a.split)
    labels, _ = src.label_codes()
    x = np.stack([decode_photo(read_bytes(f), cfg).x for f in src.files])  # (N, 3, S, S)
    small = EncoderConfig(in_channels=3, image_size=32, invert="never", fit="crop")
    pixels = np.stack([decode_photo(read_bytes(f), small).x.ravel() for f in src.files])
    fp32 = make_runner("onnx", path=art.file("encoder.onnx"))
    int8 = make_runner("onnx", path=art.file("encoder.int8.onnx"))
    rows = [
        ("raw pixels (32 px RGB, centre crop)", pixels - pixels.mean(0)),
        (
            f"EfficientNet-Lite0 (ImageNet, frozen), {cfg.image_size} px",
            efficientnet_embeddings(torch.as_tensor(x)),
        ),
        (f"trained on the train split [{art.version}]", _embed(fp32, x)),
        ("the same, int8 ONNX (compressed)", _embed(int8, x)),
    ]
    try:
        demo = ArtifactStore(a.demo_store).load("visual_search")
        dcfg = EncoderConfig.from_dict(demo.config["encoder"])
        prep = ImagePreprocessor(dcfg)
        dx = np.stack([prep(read_bytes(f))[0] for f in src.files])
        label = f"today's served demo model ({dcfg.arch}, {dcfg.image_size} px, "
        label += f"{dcfg.in_channels} channel(s)) [{demo.version}]"
        rows.append((label, _embed(make_runner("onnx", path=demo.file("encoder.onnx")), dx)))
    except ArtifactError as e:
        print(f"no demo model row: {e}")
    results = [
        {"representation": n, **evaluate_embeddings(np.asarray(e, np.float32), labels)}
        for n, e in rows
    ]
    print(f"\n{len(src)} photos ({a.split} split), {len(set(labels.tolist()))} labels")
    print("| representation | " + " | ".join(COLUMNS) + " |")
    print("| --- |" + " --- |" * len(COLUMNS))
    for r in results:
        print(f"| {r['representation']} | " + " | ".join(f"{r[c]:.3f}" for c in COLUMNS) + " |")
    return results


def throughput(a: argparse.Namespace, store_dir: str, cfg: EncoderConfig, common) -> dict:
    """The indexing job at 1 and 2 CPUs on every photo of the folder."""

    summary = {}
    for cpus in (1, 2):
        args = [*common, "--store", store_dir, "--num-cpus", str(cpus)]  # every photo
        args += ["--embed-actors", str(cpus)]  # decode + embed: one actor per CPU
        t0 = time.perf_counter()
        out = visual_search_index.index_job(args)
        ray.shutdown()
        rate, steady = out["photos_per_second"], out["photos_per_second_steady"]
        summary[f"index_{cpus}cpu"] = {**out, "wall_seconds": time.perf_counter() - t0}
        print(
            f"indexing at {cpus} CPU(s): {out['photos']} photos at {cfg.image_size} px, "
            f"{rate:.1f} photos/s with start-up, {steady:.1f} over the second half; "
            f"1M photos: {1e6 / steady / 3600:.1f} h"
        )
    return summary


if __name__ == "__main__":
    main()
