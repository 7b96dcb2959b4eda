"""Train our face + licence plate detector on Ray Train, Ray Data streaming the examples.

    python -m train.blurring --family fcos --epochs 12
    ray job submit --working-dir . -- python -m train.blurring --family faster_rcnn \
        --num-workers 2 --use-gpu

Ray Data reads the real training photos (faces: face_mask_detection_train minus its validation
eighth; plates: openalpr eu + us train files), puts each at the evaluation scale, and takes an
augmented crop (``mlsd.blurring.augment``: transforms.v2 on tv_tensors.BoundingBoxes) in CPU
``map_batches`` tasks; the TorchTrainer workers (CPU or GPU) optimise classification + box
regression. Each epoch reports its losses and a checkpoint; re-running with the same
``--run-name`` resumes from the latest. The final model is written as an artifact version.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import ray
import ray.train
import ray.train.torch
import torch

from mlsd.artifacts import ArtifactStore
from mlsd.blurring import data as bdata
from mlsd.blurring.artifact import (
    CALIBRATION_PHOTOS,
    calibration_photos,
    load_detector,
    write_detector,
)
from mlsd.blurring.augment import AugmentConfig, Augmenter, pad_targets, unpad_targets
from mlsd.blurring.evaluation import at_scale
from mlsd.blurring.features import drift_reference
from mlsd.blurring.model import DetectorConfig, build_detector, set_input_scale
from mlsd.blurring.pipeline import to_tensor, train_step
from mlsd.data.sources import DataError
from train.common import add_train_args, fit, init_ray, report, resume, task_resources, unwrap

# below this many optimizer steps a small set's detector is undertrained (a warning says so)
FEW_STEPS = 400
# your own boxes: every 8th photo is held out to choose the served thresholds (the demo's
# faces are split so too), when there are this many photos or more
VAL_EVERY, MIN_PHOTOS_FOR_VAL = 8, 16


class AugmentBatch:
    """Ray Data UDF (a CPU actor or task): example rows -> augmented fixed-size crops."""

    def __init__(self, aug: dict, seed: int = 0):
        self.aug = Augmenter(AugmentConfig(**aug), seed=seed + os.getpid())

    def __call__(self, batch: dict) -> dict:
        imgs, boxes, labels = [], [], []
        for path, b, lab, n in zip(
            batch["path"], batch["boxes"], batch["labels"], batch["n"], strict=True
        ):
            im, bx, lb = self.aug(bdata.load_rgb(path), b[:n], lab[:n])
            pb, pl = pad_targets(bx, lb)
            imgs.append(im)
            boxes.append(pb)
            labels.append(pl)
        return {"image": np.stack(imgs), "boxes": np.stack(boxes), "labels": np.stack(labels)}


def example_rows(examples: list[bdata.Example]) -> list[dict]:
    rows = []
    for e in examples:
        pb, pl = pad_targets(e.boxes, e.labels)
        rows.append({"path": str(e.path), "boxes": pb, "labels": pl, "n": len(e.boxes)})
    return rows


def train_loop_per_worker(config: dict) -> None:

    task_resources()
    torch.manual_seed(config["seed"])
    cfg = DetectorConfig.from_dict(config["detector"])
    model = build_detector(cfg, pretrained=True)
    set_input_scale(model, config["crop"])  # crops are already at the evaluation scale
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=config["lr"], momentum=0.9, weight_decay=1e-4)
    epochs, steps = config["epochs"], config["steps_per_epoch"]
    start = 0
    state = resume(model, opt)
    if state:
        start = state["epoch"] + 1
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt,
        max_lr=config["lr"],
        total_steps=max(1, epochs * steps),
        pct_start=0.1,
        last_epoch=start * steps - 1,
    )
    model = ray.train.torch.prepare_model(model)
    device = ray.train.torch.get_device()
    shard = ray.train.get_dataset_shard("train")
    batch = max(1, config["batch_size"] // ray.train.get_context().get_world_size())
    for epoch in range(start, epochs):
        t0, logs = time.perf_counter(), []
        for step, b in enumerate(shard.iter_batches(batch_size=batch, drop_last=True)):
            if step >= steps:
                break
            images = [to_tensor(im).to(device) for im in b["image"]]
            targets = [
                {k: v.to(device) for k, v in unpad_targets(bx, lb).items()}
                for bx, lb in zip(b["boxes"], b["labels"], strict=True)
            ]
            logs.append(train_step(model, opt, images, targets))
            sched.step()
        metrics = {
            "epoch": epoch,
            "resumed_from_epoch": start,
            "steps": len(logs),
            "epoch_seconds": time.perf_counter() - t0,
        }
        for k in logs[0] if logs else ():
            metrics[k] = float(np.mean([x[k] for x in logs]))
        state = {"model": unwrap(model).state_dict(), "optimizer": opt.state_dict()}
        report(metrics, state | {"epoch": epoch})


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--family", default="fcos", choices=["fcos", "retinanet", "faster_rcnn"])
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--crop", type=int, default=416)
    p.add_argument("--train-from-block", type=int, default=4)
    p.add_argument("--fpn-channels", type=int, default=96)
    p.add_argument(
        "--min-stride",
        type=int,
        default=8,
        choices=[4, 8],
        help="the pyramid's finest level: 8 (with --head-convs 2: the fast detector, served as "
        "int8) or 4 (4x the locations, for small faces; the detector before issue 25)",
    )
    p.add_argument(
        "--head-convs", type=int, default=2, help="3x3 convs in each FCOS tower (torchvision: 4)"
    )
    p.add_argument(
        "--calibration-photos",
        type=int,
        default=CALIBRATION_PHOTOS,
        help="training photos the int8 graph's activation ranges come from",
    )
    p.add_argument("--max-steps-per-epoch", type=int, default=0)
    p.add_argument("--limit", type=int, default=0, help="first N examples of each set (tests)")
    p.add_argument("--data-root", default=None, help="folder holding the demo's data sets")
    p.add_argument(
        "--plate-regions",
        nargs="+",
        default=["eu", "us"],
        help="the demo's plate regions to train on (leave one out: bench.blurring_regions)",
    )
    p.add_argument("--no-faces", action="store_true", help="the demo's plates only")
    p.add_argument(
        "--synthetic-plates",
        type=float,
        default=0.33,
        help="probability a real plate is painted over with a synthetic one of another format "
        "(mlsd.blurring.synthetic; one more is painted elsewhere at 0.6 x this); 0 = real "
        "plates only. Leave-one-region-out (bench.blurring_regions): trained on us, eu plates "
        "covered 0.481 -> 0.944 at these rates (a third of the plates, one photo in five)",
    )
    p.add_argument(
        "--scale-jitter",
        type=float,
        nargs=2,
        default=[0.6, 1.5],
        help="each photo's scale around the evaluation scale (plates and faces of any size)",
    )
    p.add_argument(
        "--plate-scale",
        type=float,
        default=0.0,
        help="probability a photo with plates is scaled by one plate's size (a width "
        "log-uniform in --plate-widths) instead of --scale-jitter: plates of every distance, "
        "not the one its region was photographed at (mlsd.blurring.augment.draw_scale). "
        "Plate-only, leave-one-region-out eu -> us: 0.662 -> 0.941 coverage at 0.5. The "
        "served faces + plates detector is trained at 0.5 for 16 epochs (plate AP 0.964 -> "
        "0.991 on today's test); at 8 epochs (1,720 steps) 0.5 lost plate AP (0.902): give it "
        "the 16. 0 (the photo jitter only) stays the default of short runs (the demo)",
    )
    p.add_argument(
        "--plate-widths",
        type=float,
        nargs=2,
        default=[0.03, 0.30],
        help="the plate widths --plate-scale draws, as fractions of the photo's long side",
    )
    g = p.add_argument_group("your own boxes (README, 'Your own data')")
    g.add_argument("--boxes", default=None, help="COCO JSON file, or YOLO / VOC folder")
    g.add_argument("--boxes-format", default="coco", choices=list(bdata.BOX_FORMATS))
    g.add_argument("--boxes-images", default=None, help="COCO: the photos' folder")
    g.add_argument(
        "--class-map",
        default="face=face,plate=plate,license_plate=plate",
        help="CLASS=face|plate, comma-separated; other classes are left out",
    )
    g.add_argument("--max-bad-fraction", type=float, default=0.5)
    p.add_argument("--seed", type=int, default=0)
    add_train_args(p, "blurring-<family>")
    p.add_argument("--store", default="artifacts")
    p.add_argument("--name", default=None, help="artifact name (default blurring_<family>)")
    p.add_argument(
        "--augment",
        default="online",
        choices=["online", "offline"],
        help="online: a new crop every epoch; offline: --offline-copies stored once",
    )
    p.add_argument("--offline-copies", type=int, default=4)
    p.add_argument("--offline-dir", default=os.path.abspath("var/blurring_offline"))
    p.add_argument(
        "--export-only",
        action="store_true",
        help="write the artifact from --run-name's latest checkpoint, no training",
    )
    p.add_argument(
        "--from-artifact",
        default=None,
        metavar="ARTIFACT[@VERSION]",
        help="write a new version of a trained detector (its weights, configuration and training "
        "record), exported and validated as a run's would be (e.g. one from before artifacts "
        "carried validated thresholds); no training",
    )
    a = p.parse_args(argv)
    try:  # the augmentation's own checks, before Ray starts
        AugmentConfig(plate_scale=a.plate_scale, plate_widths=tuple(a.plate_widths))
    except ValueError as e:
        p.error(f"--plate-scale / --plate-widths: {e}")
    a.run_prefix = f"blurring-{a.family}"
    return a


def offline_crops(ds, a: argparse.Namespace, n_rows: int):
    """Materialise ``--offline-copies`` augmented crops of every example once (parquet under
    ``--offline-dir``, reused when present); training then reads them, shuffled by block,
    without augmenting. Returns the dataset and {seconds, bytes, crops}."""

    lo, hi = a.scale_jitter
    key = f"crop{a.crop}-x{a.offline_copies}-seed{a.seed}-n{n_rows}"
    key += f"-syn{a.synthetic_plates:g}-scale{lo:g}-{hi:g}-plates{a.plate_scale:g}"
    out = Path(a.offline_dir) / key
    t0 = time.perf_counter()
    if not (out / "_done").exists():
        copies = ds
        for _ in range(a.offline_copies - 1):
            copies = copies.union(ds)
        copies.write_parquet(str(out))
        (out / "_done").write_text("ok")
    stored = sum(p.stat().st_size for p in out.glob("*.parquet"))
    read = ray.data.read_parquet(str(out)).randomize_block_order(seed=a.seed)
    return read, {
        "seconds": time.perf_counter() - t0,
        "bytes": stored,
        "crops": n_rows * a.offline_copies,
    }


def latest_checkpoint(runs_dir: str, run_name: str) -> Path:
    found = sorted(
        Path(runs_dir, run_name).glob("checkpoint_*/state.pt"), key=lambda p: p.stat().st_mtime
    )
    if not found:
        raise FileNotFoundError(f"no checkpoint of run {run_name!r} under {runs_dir}")
    return found[-1]


def run(a: argparse.Namespace) -> dict:

    faces, plates, validation, source = training_examples(a)
    if a.from_artifact:  # a trained detector re-exported and validated: no Ray, no training
        name, _, version = a.from_artifact.partition("@")
        art = ArtifactStore(a.store).load(name, version or "latest")
        model, cfg = load_detector(art)
        train = art.config.get("train", {}) | {"exported_from": f"{art.name}/{art.version}"}
        return _export(
            a,
            cfg,
            model.state_dict(),
            dict(art.manifest.get("metrics", {})),
            train.get("run"),
            train.get("train_seconds"),
            faces,
            plates,
            validation,
            source,
            name=name,
            train=train,
            data=dict(art.manifest.get("data", {})),
        )
    cfg = DetectorConfig(
        family=a.family,
        train_from_block=a.train_from_block,
        fpn_channels=a.fpn_channels,
        min_stride=a.min_stride,
        head_convs=a.head_convs,
    )
    if a.export_only:  # e.g. a run stopped early: its last finished epoch becomes a version
        state = torch.load(latest_checkpoint(a.runs_dir, a.run_name), weights_only=True)
        return _export(
            a,
            cfg,
            state["model"],
            {"epoch": state["epoch"], "partial": True},
            a.run_name,
            None,
            faces,
            plates,
            validation,
            source,
        )
    init_ray(a.num_cpus)
    if a.limit:
        faces, plates = faces[: a.limit], plates[: a.limit]
    rows = example_rows(faces + plates)
    aug = AugmentConfig(
        crop=a.crop,
        scale_jitter=tuple(a.scale_jitter),
        synthetic_plates=a.synthetic_plates,
        extra_plates=0.6 * a.synthetic_plates,
        plate_scale=a.plate_scale,
        plate_widths=tuple(a.plate_widths),
    )
    ds = (
        ray.data.from_items(rows, override_num_blocks=min(32, len(rows)))
        .randomize_block_order(seed=a.seed)  # no shuffle tasks: they would wait for CPUs
        .map_batches(
            AugmentBatch,
            fn_constructor_kwargs={"aug": aug.__dict__, "seed": a.seed},
            batch_size=8,
            concurrency=1,
            num_cpus=0.5,
        )
    )
    offline = {}
    if a.augment == "offline":  # the book's trade-off: augment once, store, train from storage
        ds, offline = offline_crops(ds, a, len(rows))
    steps = len(rows) // a.batch_size
    if a.max_steps_per_epoch:
        steps = min(steps, a.max_steps_per_epoch)
    if not (a.limit or a.max_steps_per_epoch) and a.epochs * steps < FEW_STEPS:
        print(
            f"warning: {a.epochs} epochs of {steps} steps is {a.epochs * steps} optimizer steps; "
            f"a set this small needs more epochs (~{FEW_STEPS} steps: --epochs "
            f"{-(-FEW_STEPS // max(steps, 1))}). Trained on 63 photos, 180 steps left the "
            "detector unsure of plates it had not seen; 450 did not (README, 'Plates of any "
            "country')",
            file=sys.stderr,
        )
    config = {
        "detector": cfg.to_dict(),
        "epochs": a.epochs,
        "lr": a.lr,
        "batch_size": a.batch_size,
        "crop": a.crop,
        "seed": a.seed,
        "steps_per_epoch": steps,
    }
    run = fit(train_loop_per_worker, config, a, datasets={"train": ds})
    metrics = {k: v for k, v in run.metrics.items() if isinstance(v, (int, float))}
    metrics |= {f"offline_{k}": v for k, v in offline.items()}
    out = _export(
        a,
        cfg,
        run.state["model"],
        metrics,
        run.run_name,
        run.seconds,
        faces,
        plates,
        validation,
        source,
    )
    return out | {"final": run.metrics}


def training_examples(a: argparse.Namespace) -> tuple[list, list, list | dict, dict]:
    """(photos with faces or none, photos with plates, validation photos, what they are): the
    demo's sets (validation per class: the faces' held-out eighth, the plates' val files), or
    the user's ``--boxes`` in COCO / YOLO / VOC, mapped by ``--class-map`` (every 8th photo
    held out for validation from 16 photos on); its bad rows are reported in the artifact,
    and a mostly bad file fails before training starts. The served thresholds are chosen on
    the validation photos (none: the artifact has no validated thresholds)."""
    cut = (lambda xs: xs[: a.limit]) if a.limit else (lambda xs: xs)
    if a.boxes is None:
        regions = tuple(a.plate_regions)
        faces = [] if a.no_faces else bdata.faces("train", a.data_root)
        plates = bdata.plates("train", a.data_root, regions=regions)
        # each class's threshold on its own set's photos, as bench.blurring_eval counts them
        val = {"plate": cut(bdata.plates("val", a.data_root, regions=regions))}
        if not a.no_faces:
            val["face"] = cut(bdata.faces("val", a.data_root))
        source = {
            "faces": f"face_mask_detection_train (train split, {len(faces)} photos)",
            "plates": f"openalpr_plates {'+'.join(regions)} (train split, {len(plates)} photos)",
            "validation": ", ".join(f"{len(v)} {k} photos" for k, v in sorted(val.items()))
            + " (faces: the training photos' held-out eighth; plates: the val files)",
        }
        if a.synthetic_plates:
            source["synthetic_plates"] = (
                f"synthetic: p={a.synthetic_plates} of each real plate painted over with a "
                "rendered plate of another format (mlsd.blurring.synthetic)"
            )
        return faces, plates, val, source
    class_map = bdata.parse_class_map(a.class_map)
    examples, bad = bdata.read_boxes(a.boxes_format, a.boxes, class_map, a.boxes_images)
    bad.check(f"{a.boxes_format} boxes {a.boxes}", a.max_bad_fraction)
    if not examples:
        raise DataError(f"{a.boxes}: no usable photo")
    val = []
    if len(examples) >= MIN_PHOTOS_FOR_VAL:
        val = cut(examples[::VAL_EVERY])
        examples = [e for i, e in enumerate(examples) if i % VAL_EVERY]
    plates = [e for e in examples if (e.labels == bdata.PLATE).any()]
    faces = [e for e in examples if not (e.labels == bdata.PLATE).any()]
    n_boxes = {
        n: int(sum((e.labels == v).sum() for e in examples)) for v, n in bdata.LABELS.items()
    }
    return (
        faces,
        plates,
        val,
        {
            "boxes": f"{a.boxes_format}:{a.boxes} ({len(examples)} photos)",
            "class_map": class_map,
            "boxes_by_class": n_boxes,
            "validation": f"{len(val)} photos (every {VAL_EVERY}th held out)",
            "input": bad.report(),
        },
    )


def _export(
    a,
    cfg,
    weights,
    metrics,
    run_name,
    seconds,
    faces,
    plates,
    validation,
    source,
    name: str | None = None,
    train: dict | None = None,
    data: dict | None = None,
) -> dict:

    model = build_detector(cfg, pretrained=False)
    model.load_state_dict(weights)
    name = name or a.name or f"blurring_{a.family}"
    photos = faces[::4] + plates[::4]
    if len(photos) < 8:  # a small run (one region's plates): the drift reference needs a few
        photos = (faces + plates)[:8]
    reference = drift_reference(
        (bdata.load_rgb(e.path) for e in photos),
        f"{len(photos)} training photos (every 4th, or the first 8)",
    )
    version, thresholds = write_detector(
        ArtifactStore(a.store),
        name,
        model,
        cfg,
        train=train
        or {
            "run": run_name,
            "epochs": a.epochs,
            "lr": a.lr,
            "crop": a.crop,
            "batch_size": a.batch_size,
            "plate_regions": list(a.plate_regions),
            "faces": not a.no_faces,
            "synthetic_plates": a.synthetic_plates,
            "scale_jitter": list(a.scale_jitter),
            "plate_scale": a.plate_scale,
            "plate_widths": list(a.plate_widths),
            "train_seconds": seconds,
            "num_workers": a.num_workers,
            "use_gpu": a.use_gpu,
        },
        data=(data or source) | {"validation": source["validation"]},
        metrics=metrics,
        reference=reference,
        calibration=[
            bdata.load_rgb(e.path) for e in calibration_photos(faces, plates, a.calibration_photos)
        ],
        validation={k: at_scale(v, cfg.max_size) for k, v in validation.items()}
        if isinstance(validation, dict)
        else at_scale(validation, cfg.max_size),
    )
    return {
        "run": run_name,
        "train_seconds": seconds,
        "artifact": f"{name}/{version}",
        "thresholds": thresholds,  # what "threshold: validated" serves
    }


def main(argv: list[str] | None = None) -> None:
    print(json.dumps(run(parse_args(argv)), indent=2, default=str))


if __name__ == "__main__":
    main()
