"""CenterFace, the packaged face detector the blurring app serves beside ours, as an int8 graph.

    python -m train.blurring_centerface [--photos street/] [--store artifacts]
    ray job submit --working-dir . -- python -m train.blurring_centerface --store s3://b/artifacts

Static int8 (QDQ, per-channel weights, the four output convolutions in fp32), calibrated on real
photos at the served scale (long side 1024): the training face and plate photos by default, or
any folder of your own (``--photos``: images, no boxes needed). Seconds on a CPU; no Ray needed.
Writes artifact ``centerface_int8`` with what it cost against the packaged fp32 graph on the
validation faces (AP@0.5 and blur coverage at CenterFace's served threshold, images/s; a graph
that loses more than --max-coverage-loss of it is refused), which
``{"kind": "centerface", "backend": "onnx-int8"}`` serves (serve_config.yaml).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import fsspec
import numpy as np

from mlsd.artifacts import ArtifactStore
from mlsd.blurring import backends as B
from mlsd.blurring import centerface
from mlsd.blurring import data as bdata
from mlsd.blurring import evaluation as E
from mlsd.blurring.artifact import (
    CALIBRATION_PHOTOS,
    CENTERFACE_INT8,
    calibration_photos,
    write_centerface_int8,
)
from mlsd.blurring.pipeline import resize
from mlsd.data.sources import DataError, list_files
from mlsd.image import InvalidImage, decode_image
from mlsd.runtime import resolve_threads, set_process_threads

SERVED_SCALE = 1024  # long side the detectors run at (apps/blurring.py DetectorArgs.long_side)
MAX_PIXELS = 100_000_000  # what train.blur_batch accepts: phone photos of 48-108 MP included


def _positive(text: str) -> int:
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {n}")
    return n


def served_threshold() -> float:
    """CenterFace's face threshold in the served set (SERVED_MEMBERS), 0.2 if it has none."""
    for m in B.SERVED_MEMBERS:
        if m["kind"] == "centerface":
            t = m.get("threshold", 0.2)
            return float(t["face"] if isinstance(t, dict) else t)
    return 0.2


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--store", default="artifacts")
    p.add_argument("--name", default=CENTERFACE_INT8, help="artifact name")
    p.add_argument(
        "--photos",
        default=None,
        help="a folder of your own photos to calibrate on (default: the training face and "
        "plate photos)",
    )
    p.add_argument("--calibration-photos", type=_positive, default=CALIBRATION_PHOTOS)
    p.add_argument(
        "--check-photos",
        type=int,
        default=32,
        help="validation face photos the int8 graph is compared on (0: none)",
    )
    p.add_argument(
        "--threshold",
        type=float,
        default=served_threshold(),
        help="the blur threshold coverage is compared at (default: CenterFace's served one)",
    )
    p.add_argument(
        "--max-coverage-loss",
        type=float,
        default=0.05,
        help="refuse to write a graph whose validation coverage is this much below fp32's "
        "(photos without faces calibrate the face activations too narrowly)",
    )
    p.add_argument("--data-root", default=None)
    return p.parse_args(argv)


def _at_scale(image):
    return resize(image, SERVED_SCALE / max(image.shape[:2]))


def own_photos(source: str, n: int) -> tuple[list, dict]:
    """``n`` readable photos spread evenly over ``source`` (a folder, glob, file list or URI,
    sorted by name): evenly spaced files first, then the others in order until ``n`` read, so
    unreadable files (skipped and listed) do not leave the calibration short. None readable
    fails naming the source."""
    paths = list_files(source, bdata.IMAGE_EXTENSIONS)  # DataError naming a missing source
    spread = [int(i) for i in np.unique(np.linspace(0, len(paths) - 1, min(n, len(paths))))]
    order = spread + [i for i in range(len(paths)) if i not in set(spread)]
    photos, bad = [], []
    for i in order:
        if len(photos) == n:
            break
        try:
            with fsspec.open(paths[i], "rb") as f:
                data = f.read()
            img = decode_image(data, len(data) + 1, MAX_PIXELS, target=SERVED_SCALE)
            photos.append(np.asarray(img.convert("RGB")))
        except (InvalidImage, OSError) as e:
            bad.append({"file": paths[i], "reason": str(e)[:200]})
    if not photos:
        raise DataError(f"{source}: no readable photo to calibrate on ({len(paths)} image files)")
    return photos, {"photos": f"{source} ({len(photos)} of {len(paths)})", "unreadable": bad}


def run(a: argparse.Namespace) -> dict:
    threads = set_process_threads(resolve_threads())
    if a.photos:
        photos, source = own_photos(a.photos, a.calibration_photos)
    else:
        faces = bdata.faces("train", a.data_root)
        plates = bdata.plates("train", a.data_root)
        picked = calibration_photos(faces, plates, a.calibration_photos)
        photos = [bdata.load_rgb(e.path) for e in picked]
        source = {"photos": f"face_mask_detection_train + openalpr_plates train ({len(photos)})"}
    photos = [_at_scale(p) for p in photos]
    check = E.at_scale(bdata.faces("val", a.data_root)[: a.check_photos]) if a.check_photos else []
    with tempfile.TemporaryDirectory() as d:
        graph = centerface.quantize(Path(d) / centerface.INT8_FILE, photos)
        metrics: dict = {}
        if check:  # what 8 bits cost, on photos neither graph was calibrated on
            metrics |= _compare(B.CenterFace(None, num_threads=threads), check, a.threshold, "fp32")
            int8 = B.CenterFace(None, num_threads=threads, graph=graph)
            metrics |= _compare(int8, check, a.threshold, "int8")
            metrics["check_photos"] = len(check)
            loss = metrics["val_coverage_fp32"] - metrics["val_coverage_int8"]
            if loss > a.max_coverage_loss:
                raise ValueError(
                    f"the int8 graph blurs {metrics['val_coverage_int8']:.3f} of {len(check)} "
                    f"validation photos' faces at threshold {a.threshold} against fp32's "
                    f"{metrics['val_coverage_fp32']:.3f} (more than --max-coverage-loss "
                    f"{a.max_coverage_loss}): calibrate on photos with faces in them; nothing "
                    "was written"
                )
        calibration = {"photos": len(photos), "long_side": SERVED_SCALE, "fp32_outputs": 4}
        version = write_centerface_int8(
            ArtifactStore(a.store), a.name, graph, calibration, source, metrics
        )
    return {"artifact": f"{a.name}/{version}", "metrics": metrics}


def _compare(det, images, threshold: float, tag: str) -> dict:
    res, speed = E.run_detector(det, images)
    r = E.evaluate(res, bdata.FACE, threshold, buckets=False)
    return {
        f"val_ap50_{tag}": r["ap50"],
        f"val_coverage_{tag}": r["coverage"],
        f"val_fp_per_image_{tag}": r["fp_per_image"],
        f"images_per_s_{tag}": speed,
    }


def main(argv=None) -> None:
    print(json.dumps(run(parse_args(argv)), indent=2, default=str))


if __name__ == "__main__":
    main()
