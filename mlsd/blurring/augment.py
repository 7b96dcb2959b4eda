"""Training-time augmentation with ``torchvision.transforms.v2`` on ``tv_tensors.BoundingBoxes``
(boxes move with every geometric transform), and its offline variant.

Each example is first put at the scale the detector is evaluated at (long side 1024), jittered
(0.75-1.25 x), then a fixed-size crop is taken (so small faces keep their pixels), flipped,
colour-jittered and sometimes blurred; boxes cut below 2 px by the crop are dropped.

Plates by size, not by photo: a region's photos are taken at one distance (OpenALPR's EU plates
span 18-30 % of the photo's width, its US plates 5-13 %), so a photo-level jitter teaches one
band of plate sizes and a detector trained on one region misses the other's. With
``plate_scale`` the scale is instead drawn so that one of the photo's plates gets a width
log-uniform in ``plate_widths`` (fractions of the long side: a car down the street to a
close-up); the photo's other boxes move with it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from mlsd.blurring.data import PLATE
from mlsd.blurring.synthetic import paint_plates

MAX_BOXES = 256  # per crop; rows are padded to this (label 0 = padding)


@dataclass
class AugmentConfig:
    long_side: int = 1024
    scale_jitter: tuple[float, float] = (0.75, 1.25)
    crop: int = 416
    flip: float = 0.5
    colour: float = 0.8  # probability of brightness / contrast / saturation / hue jitter
    blur: float = 0.2  # probability of a Gaussian blur (motion, focus)
    # synthetic plates (mlsd.blurring.synthetic): the probability that a real plate is painted
    # over with one of another format, and that one more is painted elsewhere
    synthetic_plates: float = 0.0
    extra_plates: float = 0.0
    # the probability that a photo with plates is scaled by one plate's size instead (above)
    plate_scale: float = 0.0
    plate_widths: tuple[float, float] = (0.03, 0.30)
    scale_bounds: tuple[float, float] = (0.15, 2.0)  # the plate-size scale's limits

    def __post_init__(self) -> None:
        if not 0.0 <= self.plate_scale <= 1.0:
            raise ValueError(f"plate_scale is a probability in [0, 1], not {self.plate_scale}")
        lo, hi = self.plate_widths
        if not 0.0 < lo <= hi:
            raise ValueError(
                f"plate_widths (LO, HI) needs 0 < LO <= HI (fractions of the long side), not "
                f"{tuple(self.plate_widths)}"
            )


def draw_scale(
    cfg: AugmentConfig,
    rng: np.random.Generator,
    shape: tuple[int, ...],
    boxes: np.ndarray,
    labels: np.ndarray,
) -> float:
    """The factor an (H, W) photo is resized by: the evaluation scale times a jitter, or, with
    ``cfg.plate_scale``, the factor that gives a random plate of it a log-uniform width."""
    long = max(shape[:2])
    s = cfg.long_side / long
    plates = np.flatnonzero(np.asarray(labels) == PLATE)
    if len(plates) and rng.random() < cfg.plate_scale:
        x1, _, x2, _ = np.asarray(boxes, np.float32).reshape(-1, 4)[rng.choice(plates)]
        width = max(float(x2 - x1), 1.0) / long  # of the long side
        lo, hi = cfg.plate_widths
        target = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
        return s * float(np.clip(target / width, *cfg.scale_bounds))
    return s * float(rng.uniform(*cfg.scale_jitter))


def _transforms(cfg: AugmentConfig):

    from torchvision.transforms import v2

    return v2.Compose(
        [
            v2.RandomCrop(cfg.crop, pad_if_needed=True),
            v2.RandomHorizontalFlip(cfg.flip),
            v2.RandomApply([v2.ColorJitter(0.3, 0.3, 0.3, 0.05)], p=cfg.colour),
            v2.RandomApply([v2.GaussianBlur(5, sigma=(0.1, 1.5))], p=cfg.blur),
            v2.SanitizeBoundingBoxes(min_size=2),
        ]
    )


class Augmenter:
    """(H, W, 3) uint8 + boxes (N, 4) xyxy + labels -> one augmented fixed-size crop."""

    def __init__(self, cfg: AugmentConfig | None = None, seed: int | None = None):
        self.cfg = cfg or AugmentConfig()
        self.tf = _transforms(self.cfg)
        self.rng = np.random.default_rng(seed)
        if seed is not None:
            torch.manual_seed(seed)

    def __call__(self, image: np.ndarray, boxes: np.ndarray, labels: np.ndarray):

        from torchvision import tv_tensors
        from torchvision.transforms.v2 import functional as F

        if self.cfg.synthetic_plates or self.cfg.extra_plates:
            image, boxes, labels = paint_plates(
                image, boxes, labels, self.rng, self.cfg.synthetic_plates, self.cfg.extra_plates
            )
        h, w = image.shape[:2]
        s = draw_scale(self.cfg, self.rng, image.shape, boxes, labels)
        size = [max(1, round(h * s)), max(1, round(w * s))]
        img = tv_tensors.Image(torch.from_numpy(np.array(image, copy=True)).permute(2, 0, 1))
        bx = tv_tensors.BoundingBoxes(
            torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            format="XYXY",
            canvas_size=(h, w),
        )
        img, bx = F.resize(img, size, antialias=True), F.resize(bx, size)
        out = self.tf({"image": img, "boxes": bx, "labels": torch.as_tensor(labels)})
        return (
            out["image"].permute(1, 2, 0).numpy(),  # (crop, crop, 3) uint8
            out["boxes"].numpy().astype(np.float32),
            out["labels"].numpy().astype(np.int64),
        )


def pad_targets(boxes: np.ndarray, labels: np.ndarray, m: int = MAX_BOXES):
    """Fixed-size rows for Ray Data: (m, 4) boxes and (m,) labels, 0 = padding."""
    pb, pl = np.zeros((m, 4), np.float32), np.zeros(m, np.int64)
    n = min(len(boxes), m)
    pb[:n], pl[:n] = boxes[:n], labels[:n]
    return pb, pl


def unpad_targets(boxes: np.ndarray, labels: np.ndarray) -> dict[str, torch.Tensor]:
    keep = labels > 0
    return {"boxes": torch.from_numpy(boxes[keep]), "labels": torch.from_numpy(labels[keep])}
