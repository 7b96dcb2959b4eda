"""How a blurring detector is judged (``python -m bench.blurring_eval``), on test images at
long side 1024.

- **AP@0.5** (VOC all-point interpolation) and **AP@[.5:.95]** per class, and per face-size
  bucket (box size = sqrt(w x h) at the evaluation scale: < 16, 16-32, >= 32 px; ground truth
  outside a bucket, and detections matched to it or sized outside it, are ignored there);
- **blur coverage**: the share of ground-truth boxes at least 80 % covered by the union of the
  blurred regions (detections at the served threshold, enlarged 1.2x about their centre) - the
  privacy figure: an uncovered face leaks;
- **false positives per image** (detections at the served threshold matching no ground truth
  at IoU 0.5) and the **blurred area share** (what blurring costs the picture).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import torch

from mlsd.blurring.data import LABELS, load_rgb
from mlsd.blurring.pipeline import Detections, fuse, resize

IOU_THRESHOLDS = np.round(np.arange(0.5, 0.96, 0.05), 2)
SIZE_BUCKETS = {"<16": (0, 16), "16-32": (16, 32), ">=32": (32, float("inf"))}


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, 4) x (M, 4) -> (N, M) IoU (torchvision.ops.box_iou)."""
    from torchvision.ops import box_iou as tv_iou

    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)), np.float32)
    return tv_iou(torch.from_numpy(a).float(), torch.from_numpy(b).float()).numpy()


def box_size(b: np.ndarray) -> np.ndarray:
    return np.sqrt(np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None))


def enlarge(boxes: np.ndarray, factor: float, w: int, h: int) -> np.ndarray:
    """Boxes scaled ``factor`` about their centres, clipped to the image."""
    c = (boxes[:, :2] + boxes[:, 2:]) / 2
    half = (boxes[:, 2:] - boxes[:, :2]) * factor / 2
    out = np.concatenate([c - half, c + half], 1)
    out[:, [0, 2]] = out[:, [0, 2]].clip(0, w)
    out[:, [1, 3]] = out[:, [1, 3]].clip(0, h)
    return out


@dataclass
class ImageResult:
    gt_boxes: np.ndarray
    gt_labels: np.ndarray
    det: Detections
    width: int
    height: int


def _match(det_boxes, det_scores, gt_boxes, iou_t, gt_ignore, det_ignore_size):
    """Greedy matching by score (VOC / COCO): per detection True (TP) / False (FP) / None
    (ignored: matched an ignored ground truth, or unmatched and sized outside the bucket)."""
    order = np.argsort(-det_scores, kind="stable")
    ious = box_iou(det_boxes[order], gt_boxes)
    taken = np.zeros(len(gt_boxes), bool)
    out = np.empty(len(order), object)
    for r, i in enumerate(order):
        best, best_j = iou_t, -1
        # prefer a not-ignored ground truth, as COCO does
        for prefer_ignored in (False, True):
            for j in range(len(gt_boxes)):
                if taken[j] or gt_ignore[j] != prefer_ignored:
                    continue
                if ious[r, j] >= best:
                    best, best_j = ious[r, j], j
            if best_j >= 0:
                break
        if best_j >= 0:
            taken[best_j] = True
            out[r] = None if gt_ignore[best_j] else True
        else:
            out[r] = None if det_ignore_size[i] else False
    result = np.empty(len(order), object)
    result[order] = out
    return result


def average_precision(scores, tp, n_gt: int, interpolation: str = "voc") -> float:
    """AP from scored detections marked TP/FP. ``voc``: all-point interpolation (VOC 2010+);
    ``coco101``: COCO's 101 recall points."""
    if n_gt == 0:
        return float("nan")
    order = np.argsort(-np.asarray(scores), kind="mergesort")
    tp = np.asarray(tp, np.float64)[order]
    ctp, cfp = np.cumsum(tp), np.cumsum(1 - tp)
    recall = ctp / n_gt
    precision = ctp / np.maximum(ctp + cfp, np.finfo(float).eps)
    if interpolation == "coco101":
        prec = precision.copy()
        for i in range(len(prec) - 1, 0, -1):
            prec[i - 1] = max(prec[i - 1], prec[i])
        points = np.linspace(0, 1, 101)
        idx = np.searchsorted(recall, points, side="left")
        return float(np.mean([prec[i] if i < len(prec) else 0.0 for i in idx]))
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], precision, [0.0]])
    for i in range(len(mpre) - 1, 0, -1):
        mpre[i - 1] = max(mpre[i - 1], mpre[i])
    i = np.nonzero(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


def pr_curve(results: list[ImageResult], label: int, iou_t: float = 0.5):
    """(recall, precision, scores) of one class over a set of images."""
    scores, tps, n_gt = _scored(results, label, iou_t, None)
    order = np.argsort(-scores, kind="mergesort")
    tp = tps[order].astype(np.float64)
    ctp, cfp = np.cumsum(tp), np.cumsum(1 - tp)
    return ctp / max(n_gt, 1), ctp / np.maximum(ctp + cfp, 1e-12), scores[order]


def _scored(results, label, iou_t, bucket):
    scores, tps, n_gt = [], [], 0
    for r in results:
        g = r.gt_labels == label
        gt = r.gt_boxes[g]
        d = r.det.labels == label
        db, ds = r.det.boxes[d], r.det.scores[d]
        if bucket is None:
            gi = np.zeros(len(gt), bool)
            di = np.zeros(len(db), bool)
        else:
            lo, hi = bucket
            gs, dsz = box_size(gt), box_size(db)
            gi, di = (gs < lo) | (gs >= hi), (dsz < lo) | (dsz >= hi)
        n_gt += int((~gi).sum())
        m = _match(db, ds, gt, iou_t, gi, di)
        keep = np.array([x is not None for x in m], bool)
        scores.append(ds[keep])
        tps.append(np.array([bool(x) for x in m[keep]], bool))
    if not scores:
        return np.zeros(0, np.float32), np.zeros(0, bool), 0
    return np.concatenate(scores), np.concatenate(tps), n_gt


def ap(results, label, iou_t=0.5, bucket=None, interpolation="voc") -> float:
    scores, tps, n_gt = _scored(results, label, iou_t, bucket)
    return average_precision(scores, tps, n_gt, interpolation)


def ap_range(results, label, bucket=None, interpolation="voc") -> float:
    return float(np.nanmean([ap(results, label, t, bucket, interpolation) for t in IOU_THRESHOLDS]))


def blur_mask(boxes: np.ndarray, w: int, h: int, enlarge_by: float = 1.2) -> np.ndarray:
    mask = np.zeros((h, w), bool)
    for x1, y1, x2, y2 in enlarge(boxes, enlarge_by, w, h).round().astype(int):
        mask[y1:y2, x1:x2] = True
    return mask


def coverage_stats(
    results: list[ImageResult],
    threshold,
    min_cover: float = 0.8,
    enlarge_by: float = 1.2,
    label: int | None = None,
    bucket: tuple | None = None,
) -> dict:
    """Blur coverage, FP/image and blurred area at the served threshold (a float or a
    per-class dict); ``label`` / ``bucket`` restrict which ground truth is counted."""
    covered = total = fps = 0
    area = []
    for r in results:
        det = r.det.above(threshold)
        mask = blur_mask(det.boxes, r.width, r.height, enlarge_by)
        area.append(mask.mean() if mask.size else 0.0)
        sel = np.ones(len(r.gt_boxes), bool) if label is None else r.gt_labels == label
        if bucket is not None:
            s = box_size(r.gt_boxes)
            sel &= (s >= bucket[0]) & (s < bucket[1])
        for x1, y1, x2, y2 in r.gt_boxes[sel].round().astype(int):
            x2, y2 = max(x2, x1 + 1), max(y2, y1 + 1)
            total += 1
            covered += mask[y1:y2, x1:x2].mean() >= min_cover
        for lab in np.unique(det.labels) if label is None else [label]:
            d = det.labels == lab
            gt = r.gt_boxes[r.gt_labels == lab]
            m = _match(
                det.boxes[d],
                det.scores[d],
                gt,
                0.5,
                np.zeros(len(gt), bool),
                np.zeros(int(d.sum()), bool),
            )
            fps += int(sum(x is False for x in m))
    n = max(len(results), 1)
    return {
        "coverage": covered / total if total else float("nan"),
        "gt": total,
        "fp_per_image": fps / n,
        "blurred_area": float(np.mean(area)) if area else 0.0,
    }


@dataclass
class Report:
    name: str
    rows: dict = field(default_factory=dict)


def evaluate(results: list[ImageResult], label: int, threshold, buckets: bool = True) -> dict:
    """One detector, one class: the evaluation's row (and its size buckets)."""
    row = {
        "ap50": ap(results, label),
        "ap50_95": ap_range(results, label),
        **coverage_stats(results, threshold, label=label),
    }
    if buckets:
        for name, b in SIZE_BUCKETS.items():
            cov = coverage_stats(results, threshold, label=label, bucket=b)
            row[f"ap50[{name}]"] = ap(results, label, bucket=b)
            row[f"coverage[{name}]"] = cov["coverage"]
            row[f"gt[{name}]"] = cov["gt"]
    return row


def choose_threshold(
    results: list[ImageResult], label: int, max_fp_per_image: float = 5.0, grid=None
) -> float:
    """The served threshold from validation: the lowest score threshold whose FP/image stays
    within the bound (so coverage is as high as that bound allows)."""
    grid = np.round(np.arange(0.05, 0.96, 0.05), 2) if grid is None else grid
    for t in grid:
        if coverage_stats(results, float(t), label=label)["fp_per_image"] <= max_fp_per_image:
            return float(t)
    return float(grid[-1])


# the served thresholds' bound on validation, per class: false positives per image (a face
# blurred where none is costs less than a plate left readable; plates are fewer per photo)
FP_BOUNDS = {"face": 5.0, "plate": 1.0}


def validated_thresholds(
    detector, validation, bounds: dict[str, float] | None = None
) -> tuple[dict[str, float], dict[str, float]]:
    """A detector's served thresholds, chosen on ``validation``: (image, boxes, labels) at
    the evaluation scale (:func:`at_scale`), one list for every class (your own photos), or
    per class name (``{"face": [...], "plate": [...]}``: the demo's face and plate photos, as
    ``bench.blurring_eval`` counts them). Per class with ground truth there: the lowest
    threshold whose FP/image on its photos stays within its bound (:func:`choose_threshold`),
    and the validation coverage and FP/image at it. Chosen per artifact at training time, so
    a short demo run and a long one (their scores sit differently) are each cut where they
    should be."""
    bounds = FP_BOUNDS if bounds is None else bounds
    if not isinstance(validation, Mapping):
        validation = dict.fromkeys(LABELS.values(), validation)
    found: dict[int, list[ImageResult]] = {}  # id of a photo list -> its results, run once
    thresholds, stats = {}, {}
    for label, name in LABELS.items():
        photos = validation.get(name) or []
        if id(photos) not in found:
            found[id(photos)] = run_detector(detector, photos)[0]
        results = found[id(photos)]
        if not any((r.gt_labels == label).any() for r in results):
            continue
        t = choose_threshold(results, label, bounds[name])
        c = coverage_stats(results, t, label=label)
        thresholds[name] = t
        stats[f"val_{name}_coverage"] = c["coverage"]
        stats[f"val_{name}_fp_per_image"] = c["fp_per_image"]
    return thresholds, stats


def choose_served(
    val_stats: dict[str, dict],
    speed: dict[str, float],
    max_fp_per_image: float,
    tolerance: float = 0.01,
) -> str | None:
    """The configuration to serve: of those within the FP bound on validation, the fastest
    (``speed``: images/s) whose validation coverage is within ``tolerance`` of the best (equal
    coverage, less cost; ties: more coverage). None if none is within the bound."""
    if tolerance < 0:
        raise ValueError(f"the coverage tolerance must be >= 0, got {tolerance}")
    within = {n: v for n, v in val_stats.items() if v["fp_per_image"] <= max_fp_per_image}
    if not within:
        return None
    best = max(v["coverage"] for v in within.values())
    near = [n for n, v in within.items() if v["coverage"] >= best - tolerance]
    return max(near, key=lambda n: (speed[n], within[n]["coverage"]))


def at_scale(examples, long_side: int = 1024):
    """Each example's image and ground truth at the evaluation scale (long side 1024)."""

    out = []
    for e in examples:
        img = load_rgb(e.path)
        s = long_side / max(img.shape[:2])
        out.append((resize(img, s), e.boxes * s, e.labels))
    return out


def run_detector(detector, images) -> tuple[list[ImageResult], float]:
    """Detections of one backend on prepared (image, boxes, labels); returns images/s too."""

    results = []
    t0 = time.perf_counter()
    for img, boxes, labels in images:
        det = detector(img)
        results.append(ImageResult(boxes, labels, det, img.shape[1], img.shape[0]))
    return results, len(images) / max(time.perf_counter() - t0, 1e-9)


def union_results(
    member_results: list[list[ImageResult]],
    thresholds,
    nms_iou: float = 0.5,
    fusion: str = "enclose",
) -> list[ImageResult]:
    """What an ensemble would have found: members' detections (computed once) cut at
    ``thresholds``, joined per image and fused - without running the detectors again."""

    out = []
    for per_image in zip(*member_results, strict=True):
        parts = [r.det.above(t) for r, t in zip(per_image, thresholds, strict=True)]
        joined = fuse(Detections.concat(parts), nms_iou, fusion)
        r0 = per_image[0]
        out.append(ImageResult(r0.gt_boxes, r0.gt_labels, joined, r0.width, r0.height))
    return out


def choose_ensemble_thresholds(
    member_results: list[list[ImageResult]],
    label: int,
    max_fp_per_image: float = 5.0,
    grid=None,
    fusion: str = "enclose",
) -> tuple[list, dict]:
    """Validation search: the members' thresholds with the highest coverage whose FP/image
    stays within the bound (ties: fewer FP). Returns (thresholds, stats). The grid is 0.05
    apart for two members, 0.1 for more (the search is exhaustive)."""

    if grid is None:
        step = 0.05 if len(member_results) <= 2 else 0.1
        grid = np.round(np.arange(0.1, 0.9 + 1e-9, step), 2)
    best, best_key = None, None
    for ts in itertools.product(grid, repeat=len(member_results)):
        union = union_results(member_results, list(ts), fusion=fusion)
        stats = coverage_stats(union, 0.0, label=label)
        if stats["fp_per_image"] > max_fp_per_image:
            continue
        key = (stats["coverage"], -stats["fp_per_image"])
        if best_key is None or key > best_key:
            best, best_key = ([float(t) for t in ts], stats), key
    if best is None:
        ts = [float(grid[-1])] * len(member_results)
        union = union_results(member_results, ts, fusion=fusion)
        return ts, coverage_stats(union, 0.0, label=label)
    return best
