"""Blurring what was found: Gaussian blur or pixelation over each box enlarged by a margin,
elliptical for faces (a face is round; the box's corners are background) and rectangular for
plates. The ellipse passes outside the enlarged box's inscribed ellipse, far enough to hold the
whole ground-truth box (semi-axes 1.2 x the enlarged half-sizes)."""

from __future__ import annotations

import io
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

from mlsd.blurring.data import FACE
from mlsd.blurring.evaluation import enlarge
from mlsd.blurring.pipeline import Detections


@dataclass
class BlurConfig:
    method: str = "gaussian"  # gaussian | pixelate
    margin: float = 1.2  # boxes enlarged this much about their centres
    ellipse_faces: bool = True
    strength: float = 0.5  # Gaussian sigma as a share of the box's shorter side
    pixels: int = 8  # pixelation: blocks across the box's shorter side

    def __post_init__(self):
        if self.method not in ("gaussian", "pixelate"):
            raise ValueError(f"blur method must be gaussian or pixelate, got {self.method!r}")
        if self.margin < 1.0:
            raise ValueError("the blur margin must be >= 1 (never blur less than the box)")


def _blurred(roi: np.ndarray, cfg: BlurConfig) -> np.ndarray:

    h, w = roi.shape[:2]
    if cfg.method == "pixelate":
        per = max(1, cfg.pixels) / max(1, min(h, w))  # blocks per pixel
        small = cv2.resize(
            roi, (max(1, round(w * per)), max(1, round(h * per))), interpolation=cv2.INTER_AREA
        )
        return cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST)
    sigma = max(1.0, cfg.strength * min(h, w))
    if sigma <= 4.0:
        return cv2.GaussianBlur(
            roi, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT
        )
    # a wide Gaussian costs O(area x sigma): blur a copy shrunk so sigma is 3 px (area
    # averaging first), then enlarge it back - the same removal of detail at a fraction of
    # the cost (a face box's sigma is half its side: 12 ms a box at full size)
    f = sigma / 3.0
    sw, sh = max(1, round(w / f)), max(1, round(h / f))
    small = cv2.resize(roi, (sw, sh), interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), sigmaX=3.0, sigmaY=3.0, borderType=cv2.BORDER_REFLECT)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def blur(image: np.ndarray, det: Detections, cfg: BlurConfig | None = None) -> np.ndarray:
    """A blurred copy of (H, W, 3) uint8 ``image``; ``det`` boxes in its pixels."""
    cfg = cfg or BlurConfig()
    out = np.array(image, copy=True)
    h, w = out.shape[:2]
    if len(det) == 0:
        return out
    boxes = enlarge(det.boxes.astype(np.float32), cfg.margin, w, h)
    for (x1, y1, x2, y2), label in zip(boxes, det.labels, strict=True):
        x1, y1 = int(np.floor(x1)), int(np.floor(y1))
        x2, y2 = int(np.ceil(x2)), int(np.ceil(y2))
        if x2 <= x1 or y2 <= y1:
            continue
        roi = out[y1:y2, x1:x2]
        soft = _blurred(roi, cfg)
        if cfg.ellipse_faces and label == FACE:
            yy, xx = np.mgrid[0 : y2 - y1, 0 : x2 - x1]
            cy, cx = (y2 - y1 - 1) / 2, (x2 - x1 - 1) / 2
            ry, rx = max(1.0, 0.6 * (y2 - y1)), max(1.0, 0.6 * (x2 - x1))
            inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0
            roi[inside] = soft[inside]
        else:
            roi[:] = soft
    return out


def encode_jpeg(image: np.ndarray, quality: int = 90) -> bytes:
    """JPEG bytes with no metadata at all: no EXIF (GPS included), no comments."""

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=quality, exif=b"", optimize=True)
    return buf.getvalue()
