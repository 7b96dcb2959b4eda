"""What training, serving and offline evaluation share: one training step, and detection of
one image at a chosen scale with boxes back in the image's own pixels."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torch import nn

from mlsd.blurring.data import FACE, PLATE
from mlsd.blurring.model import DetectorConfig, decode_dense, detection_loss, set_input_scale
from mlsd.runtime.base import ModelRunner


@dataclass
class Detections:
    boxes: np.ndarray  # (N, 4) float32 x1 y1 x2 y2, pixels of the image given
    scores: np.ndarray  # (N,) float32
    labels: np.ndarray  # (N,) int64: mlsd.blurring.data.FACE | PLATE

    def __len__(self) -> int:
        return len(self.boxes)

    def above(self, threshold: float | dict[int, float]) -> Detections:
        if isinstance(threshold, dict):
            t = np.array([threshold.get(int(lab), 1.0) for lab in self.labels], np.float32)
        else:
            t = np.float32(threshold)
        keep = self.scores >= t
        return Detections(self.boxes[keep], self.scores[keep], self.labels[keep])

    @staticmethod
    def concat(parts: list[Detections]) -> Detections:
        """One set from several (members of an ensemble, tiles, recent video frames)."""
        if not parts:
            return Detections.empty()
        return Detections(
            np.concatenate([p.boxes for p in parts]),
            np.concatenate([p.scores for p in parts]),
            np.concatenate([p.labels for p in parts]),
        )

    @staticmethod
    def empty() -> Detections:
        return Detections(
            np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64)
        )


def nms(det: Detections, iou: float = 0.5) -> Detections:
    """Per-class NMS (torchvision.ops.batched_nms)."""
    from torchvision.ops import batched_nms

    if len(det) == 0:
        return det
    keep = batched_nms(
        torch.from_numpy(det.boxes), torch.from_numpy(det.scores), torch.from_numpy(det.labels), iou
    ).numpy()
    return Detections(det.boxes[keep], det.scores[keep], det.labels[keep])


FUSIONS = ("nms", "wbf", "enclose")


def fuse(det: Detections, iou: float = 0.5, method: str = "enclose") -> Detections:
    """Merge overlapping boxes of one class (members of an ensemble, tiles).

    Boxes are grouped greedily as NMS groups them (the best-scoring box and every box of its
    class overlapping it by ``iou``); each group becomes one box scored by its best member:
    ``nms`` keeps the best box, ``wbf`` the score-weighted mean box (weighted box fusion),
    ``enclose`` the box enclosing the group - the privacy-conservative choice: NMS may keep a
    tight box from one detector and drop a wider one from another that covered the whole face.
    """
    from torchvision.ops import box_iou

    if method not in FUSIONS:
        raise ValueError(f"fusion must be one of {FUSIONS}, not {method!r}")
    if len(det) == 0 or method == "nms":
        return nms(det, iou)

    order = np.argsort(-det.scores, kind="stable")
    b, s, lab = det.boxes[order], det.scores[order], det.labels[order]
    overlap = box_iou(torch.from_numpy(b), torch.from_numpy(b)).numpy() >= iou  # (N, N)
    overlap &= lab[:, None] == lab[None, :]
    np.fill_diagonal(overlap, True)  # a zero-area box (clipped at the border) has IoU NaN
    free = np.ones(len(b), bool)
    boxes, keep = [], []
    for i in range(len(b)):
        if not free[i]:
            continue
        group = np.nonzero(free & overlap[i])[0]  # i itself included
        free[group] = False
        g = b[group]
        if method == "wbf":
            w = s[group, None]
            boxes.append((g * w).sum(0) / w.sum())
        else:
            boxes.append(np.concatenate([g[:, :2].min(0), g[:, 2:].max(0)]))
        keep.append(i)
    return Detections(np.asarray(boxes, np.float32), s[keep], lab[keep])


def train_step(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    images: list[torch.Tensor],  # each (3, H, W) float in [0, 1]
    targets: list[dict[str, torch.Tensor]],  # boxes (n, 4) xyxy, labels (n,)
    clip: float = 10.0,
) -> dict[str, float]:
    """One optimiser step on the summed detection loss; returns each term."""
    model.train()
    losses = model(images, targets)
    loss = detection_loss(losses)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], clip)
    opt.step()
    return {k: float(v) for k, v in losses.items()} | {"loss": float(loss)}


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, H, W) float32 in [0, 1]."""
    return torch.from_numpy(np.array(image, copy=True)).permute(2, 0, 1).float().div_(255.0)


@torch.inference_mode()
def detect_torch(
    model: nn.Module, images: list[np.ndarray], long_side: int = 1024
) -> list[Detections]:
    """Our torchvision detector on a batch of (H, W, 3) uint8 images, each run at long side
    ``long_side``; boxes come back in each image's own pixels (the model maps them)."""
    model.eval()
    set_input_scale(model, long_side)
    device = next(model.parameters()).device
    return _detections(model([to_tensor(im).to(device) for im in images]))


@torch.inference_mode()
def detect_dense(
    runner: ModelRunner,
    skeleton: nn.Module,
    cfg: DetectorConfig,
    images: list[np.ndarray],
    long_side: int = 1024,
) -> list[Detections]:
    """The same detector with its backbone and heads behind a runner (onnxruntime fp32 or int8:
    :class:`mlsd.blurring.model.DenseFCOS`'s graph): ``skeleton`` (the FCOS module; its weights
    are not used) resizes, normalises and pads the batch and decodes the runner's output, so
    boxes come from the one decoding path torch's own forward uses."""
    set_input_scale(skeleton, long_side)
    sizes = [tuple(im.shape[:2]) for im in images]
    if all(max(hw) == long_side for hw in sizes):  # detect_image's photos: already at scale
        batch = _batch_at_scale(images, skeleton.transform)
    else:
        batch, _ = skeleton.transform([to_tensor(im) for im in images])
    dense = torch.from_numpy(runner.run(batch.tensors.numpy()))  # (B, L, C + 5)
    return _detections(decode_dense(skeleton, cfg, dense, batch, sizes))


def _batch_at_scale(images: list[np.ndarray], transform):
    """What the model's transform makes of (H, W, 3) uint8 images whose long side is already
    its ``max_size`` (its resize is then the identity: a bilinear pass at scale 1, ~7 ms a
    photo): normalised in one multiply-add, padded to its ``size_divisible``; an ImageList."""
    from torchvision.models.detection.image_list import ImageList

    std = np.asarray(transform.image_std, np.float32)
    scale = 1.0 / (255.0 * std)  # ((x / 255) - mean) / std = x * scale + shift
    shift = -np.asarray(transform.image_mean, np.float32) / std
    d = transform.size_divisible
    h = -(-max(im.shape[0] for im in images) // d) * d
    w = -(-max(im.shape[1] for im in images) // d) * d
    out = np.zeros((len(images), 3, h, w), np.float32)  # (B, 3, H, W), zero-padded as torch pads
    for i, im in enumerate(images):
        out[i, :, : im.shape[0], : im.shape[1]] = (im * scale + shift).transpose(2, 0, 1)
    return ImageList(torch.from_numpy(out), [tuple(im.shape[:2]) for im in images])


class TorchDetector:
    """Our trained torchvision detector (faces and plates) at long side ``long_side``."""

    labels = (FACE, PLATE)

    def __init__(self, model, long_side: int = 1024, name: str = "ours"):
        self.model, self.long_side, self.name = model, long_side, name

    def __call__(self, image: np.ndarray) -> Detections:
        return self.batch([image])[0]

    def batch(self, images: list[np.ndarray]) -> list[Detections]:
        return detect_torch(self.model, images, self.long_side)


class DenseDetector:
    """Our trained FCOS with its backbone and heads in onnxruntime (``onnx`` or ``onnx-int8``:
    the fast CPU path) and the decoding in torchvision's code, at long side ``long_side``."""

    labels = (FACE, PLATE)

    def __init__(self, runner, skeleton, cfg, long_side: int = 1024, name: str = "ours"):
        self.runner, self.skeleton, self.cfg = runner, skeleton, cfg
        self.long_side, self.name = long_side, name

    def __call__(self, image: np.ndarray) -> Detections:
        return self.batch([image])[0]

    def batch(self, images: list[np.ndarray]) -> list[Detections]:
        return detect_dense(self.runner, self.skeleton, self.cfg, images, self.long_side)


def _detections(outs: list[dict[str, torch.Tensor]]) -> list[Detections]:
    return [
        Detections(
            o["boxes"].float().cpu().numpy(),
            o["scores"].float().cpu().numpy(),
            o["labels"].cpu().numpy().astype(np.int64),
        )
        for o in outs
    ]


def resize(image: np.ndarray, s: float) -> np.ndarray:
    """``image`` scaled by ``s`` (area filter down, linear up)."""

    h, w = image.shape[:2]
    return cv2.resize(
        image,
        (max(1, round(w * s)), max(1, round(h * s))),
        interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR,
    )


def tiles(h: int, w: int, size: int, overlap: int) -> list[tuple[int, int, int, int]]:
    """Overlapping (x1, y1, x2, y2) windows covering an (h, w) image."""

    def starts(n: int) -> list[int]:
        if n <= size:
            return [0]
        step = size - overlap
        out = list(range(0, n - size, step))
        return out + [n - size]

    return [(x, y, min(x + size, w), min(y + size, h)) for y in starts(h) for x in starts(w)]


def detect_image(
    detector,
    image: np.ndarray,
    long_side: int = 1024,
    max_aspect: float = 2.5,
    overlap: int = 128,
    nms_iou: float = 0.5,
) -> Detections:
    """Detections in ``image``'s own pixels. Ordinary photos are put at long side
    ``long_side`` (the scale the detectors were evaluated at); panoramas and strips (aspect
    over ``max_aspect``) would shrink their faces away, so they are cut into overlapping
    square tiles at a scale that puts the short side at <= ``long_side``, and the tiles'
    boxes are merged by NMS."""
    h, w = image.shape[:2]
    if max(h, w) / max(1, min(h, w)) <= max_aspect:
        s = long_side / max(h, w)
        det = detector(resize(image, s) if abs(s - 1) > 1e-6 else image)
        return Detections(det.boxes / s, det.scores, det.labels)
    s = min(1.0, long_side / min(h, w))
    scaled = resize(image, s) if s < 1 else image
    sh, sw = scaled.shape[:2]
    parts = []
    for x1, y1, x2, y2 in tiles(sh, sw, long_side, overlap):
        d = detector(scaled[y1:y2, x1:x2])
        if len(d):
            parts.append(
                Detections(d.boxes + np.array([x1, y1, x1, y1], np.float32), d.scores, d.labels)
            )
    if not parts:
        return Detections.empty()
    joined = Detections.concat(parts)
    return nms(Detections(joined.boxes / s, joined.scores, joined.labels), nms_iou)
