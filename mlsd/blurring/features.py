"""Blurring's input features for drift monitoring: the same numbers for the training photos
(the reference, written with the detector) and for every served upload."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from mlsd.drift import build_reference
from mlsd.image import image_statistics


def drift_features(image: np.ndarray, thumb: int = 256) -> dict[str, float]:
    """(H, W, 3) uint8 -> image statistics on a strided thumbnail (brightness: night and low
    light; saturation; edges: blur and fog), log megapixels and log aspect ratio."""
    h, w = image.shape[:2]
    step = max(1, max(h, w) // thumb)
    x = image[::step, ::step].astype(np.float32).transpose(2, 0, 1) / 255.0  # (3, h', w')
    stats = {k: float(v[0]) for k, v in image_statistics(x).items()}
    return {**stats, "megapixels": float(np.log(h * w / 1e6)), "aspect": float(np.log(w / h))}


def drift_reference(images: Iterable[np.ndarray], source: str):
    """Training photos -> the detector artifact's drift reference (input features)."""

    obs = [drift_features(im) for im in images]
    return build_reference(
        features={k: np.array([o[k] for o in obs]) for k in obs[0]}, source=source
    )
