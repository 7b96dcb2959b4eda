"""Our detection metrics, checked against pycocotools on the same detections."""

from __future__ import annotations

import numpy as np
import pytest

from mlsd.blurring import evaluation as E
from mlsd.blurring.data import FACE, PLATE
from mlsd.blurring.pipeline import Detections


def _random_set(seed: int = 0, n_images: int = 30):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_images):
        k = rng.integers(1, 8)
        xy = rng.uniform(0, 400, (k, 2))
        wh = rng.uniform(6, 80, (k, 2))
        gt = np.concatenate([xy, xy + wh], 1).astype(np.float32)
        labels = rng.choice([FACE, PLATE], k)
        # detections: jittered copies of most boxes + a few false ones
        keep = rng.random(k) < 0.8
        jit = gt[keep] + rng.normal(0, 2, (int(keep.sum()), 4)).astype(np.float32)
        jit[:, 2:] = np.maximum(jit[:, 2:], jit[:, :2] + 2)  # valid boxes only
        fake_xy = rng.uniform(0, 400, (3, 2))
        fake = np.concatenate([fake_xy, fake_xy + 30], 1).astype(np.float32)
        boxes = np.concatenate([jit, fake]).astype(np.float32)
        det_labels = np.concatenate([labels[keep], rng.choice([FACE, PLATE], 3)])
        scores = rng.uniform(0.05, 1, len(boxes)).astype(np.float32)
        out.append(E.ImageResult(gt, labels, Detections(boxes, scores, det_labels), 500, 500))
    return out


def _coco_ap(results, label, iou=None):
    pycocotools = pytest.importorskip("pycocotools")  # noqa: F841
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images, anns, dets = [], [], []
    aid = 1
    for i, r in enumerate(results):
        images.append({"id": i, "width": r.width, "height": r.height})
        for b, lab in zip(r.gt_boxes, r.gt_labels, strict=True):
            w, h = float(b[2] - b[0]), float(b[3] - b[1])
            anns.append(
                {
                    "id": aid,
                    "image_id": i,
                    "category_id": int(lab),
                    "iscrowd": 0,
                    "bbox": [float(b[0]), float(b[1]), w, h],
                    "area": w * h,
                }
            )
            aid += 1
        for b, s, lab in zip(r.det.boxes, r.det.scores, r.det.labels, strict=True):
            dets.append(
                {
                    "image_id": i,
                    "category_id": int(lab),
                    "score": float(s),
                    "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])],
                }
            )
    gt = COCO()
    cats = [{"id": FACE, "name": "face"}, {"id": PLATE, "name": "plate"}]
    gt.dataset = {"images": images, "annotations": anns, "categories": cats}
    gt.createIndex()
    ev = COCOeval(gt, gt.loadRes(dets), "bbox")
    ev.params.catIds = [label]
    ev.params.maxDets = [1, 10, 1000]
    ev.params.areaRng = [[0, 1e10]] * 4
    ev.evaluate()
    ev.accumulate()
    p = ev.eval["precision"][:, :, 0, 0, 2]  # (T, R) for area "all", maxDets 1000
    return float(p.mean()) if iou is None else float(p[list(ev.params.iouThrs).index(iou)].mean())


@pytest.mark.parametrize("label", [FACE, PLATE])
def test_ap_matches_pycocotools(label):
    res = _random_set()
    ours50 = E.ap(res, label, 0.5, interpolation="coco101")
    assert ours50 == pytest.approx(_coco_ap(res, label, 0.5), abs=1e-6)
    ours = E.ap_range(res, label, interpolation="coco101")
    assert ours == pytest.approx(_coco_ap(res, label), abs=1e-6)
    # VOC all-point is the AP@0.5: close to COCO's 101-point, not equal
    assert abs(E.ap(res, label, 0.5) - ours50) < 0.03


def test_perfect_and_empty_detectors():
    gt = np.array([[10, 10, 50, 50], [100, 100, 130, 140]], np.float32)
    lab = np.array([FACE, FACE])
    perfect = [
        E.ImageResult(
            gt, lab, Detections(gt.copy(), np.array([0.9, 0.8], np.float32), lab.copy()), 200, 200
        )
    ]
    assert E.ap(perfect, FACE) == pytest.approx(1.0)
    stats = E.coverage_stats(perfect, 0.5, label=FACE)
    assert stats["coverage"] == 1.0 and stats["fp_per_image"] == 0.0
    empty = [E.ImageResult(gt, lab, Detections.empty(), 200, 200)]
    assert E.ap(empty, FACE) == 0.0
    assert E.coverage_stats(empty, 0.5, label=FACE)["coverage"] == 0.0


def test_coverage_counts_the_enlarged_union_of_blurred_boxes():
    gt = np.array([[100, 100, 140, 140]], np.float32)
    # two half boxes that together cover the face: neither alone matches it at IoU 0.5
    det = Detections(
        np.array([[98, 98, 122, 142], [118, 98, 142, 142]], np.float32),
        np.array([0.9, 0.9], np.float32),
        np.array([FACE, FACE]),
    )
    r = [E.ImageResult(gt, np.array([FACE]), det, 300, 300)]
    assert E.coverage_stats(r, 0.5, label=FACE)["coverage"] == 1.0
    assert E.ap(r, FACE) == 0.0  # but no single box is a detection of it
    small = Detections(
        np.array([[110, 110, 130, 130]], np.float32), np.array([0.9], np.float32), np.array([FACE])
    )
    r = [E.ImageResult(gt, np.array([FACE]), small, 300, 300)]
    assert E.coverage_stats(r, 0.5, label=FACE)["coverage"] == 0.0  # 20x20 x1.2 < 80 % of 40x40


def test_size_buckets_ignore_other_sizes():
    gt = np.array([[0, 0, 10, 10], [100, 100, 150, 150]], np.float32)  # sizes 10 and 50
    det = Detections(
        np.array([[100, 100, 150, 150]], np.float32), np.array([0.9], np.float32), np.array([FACE])
    )
    r = [E.ImageResult(gt, np.array([FACE, FACE]), det, 300, 300)]
    assert E.ap(r, FACE, bucket=E.SIZE_BUCKETS[">=32"]) == pytest.approx(1.0)
    assert E.ap(r, FACE, bucket=E.SIZE_BUCKETS["<16"]) == 0.0
    assert E.ap(r, FACE) == pytest.approx(0.5)


def test_the_served_choice_is_the_fastest_near_the_best_coverage_within_the_bound():
    stats = {
        "three": {"coverage": 0.943, "fp_per_image": 4.9},
        "two": {"coverage": 0.936, "fp_per_image": 4.4},
        "one": {"coverage": 0.90, "fp_per_image": 2.0},
        "loose": {"coverage": 0.99, "fp_per_image": 9.0},  # over the FP bound
    }
    speed = {"three": 9.2, "two": 14.7, "one": 40.0, "loose": 50.0}
    assert E.choose_served(stats, speed, 5.0, 0.01) == "two"
    assert E.choose_served(stats, speed, 5.0, 0.0) == "three"  # coverage alone
    assert E.choose_served(stats, speed, 5.0, 0.05) == "one"
    assert E.choose_served(stats, speed, 1.0, 0.01) is None
    with pytest.raises(ValueError, match="tolerance"):
        E.choose_served(stats, speed, 5.0, -0.01)
