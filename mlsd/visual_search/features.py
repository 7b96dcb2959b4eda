"""Visual search's input features: an uploaded image -> the encoder's input tensor.

The same function prepares training images, the catalogue and every query, so serving and
offline evaluation see identical inputs.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageOps

from mlsd.image import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_PIXELS,
    decode_image,
    dhash,
    image_statistics,
)
from mlsd.visual_search.model import EncoderConfig


def to_array(
    img: Image.Image, size: int = 28, channels: int = 1, invert: str = "auto", fit: str = "pad"
) -> np.ndarray:
    """Image -> (channels, size, size) float32 in [0, 1] (:func:`prepare_array`)."""
    return prepare_array(img, size, channels, invert, fit)[0]


def model_input(img: Image.Image, cfg: EncoderConfig) -> tuple[np.ndarray, bool]:
    """Image -> the encoder's (C, S, S) input as the artifact's config says (channels, size,
    inversion, fit): the one preprocessing of training, indexing and serving."""
    return prepare_array(img, cfg.image_size, cfg.in_channels, cfg.invert, cfg.fit)


def prepare_array(
    img: Image.Image, size: int = 28, channels: int = 1, invert: str = "auto", fit: str = "pad"
) -> tuple[np.ndarray, bool]:
    """Image -> (channels, size, size) float32 in [0, 1], the encoder's input.

    ``fit``: "pad" keeps the whole image and pads it to a square with the background colour
    (products on a plain background); "crop" takes the centre square (photos, whose edges are
    scene). ``invert``: "auto" flips bright-background photos to the dark-background
    convention of the training set (Fashion-MNIST shows light garments on black); "never" /
    "always" force it. Returns the array and whether it was flipped.
    """
    if fit not in ("pad", "crop"):
        raise ValueError(f"fit must be 'pad' or 'crop', got {fit!r}")
    if invert not in ("auto", "never", "always"):
        raise ValueError(f"invert must be 'auto', 'never' or 'always', got {invert!r}")
    mode = "L" if channels == 1 else "RGB"
    img = img.convert(mode)
    arr = np.asarray(img)  # uint8 view; only the border is read (no full-size float copy)
    border = np.concatenate(
        [arr[0].ravel(), arr[-1].ravel(), arr[:, 0].ravel(), arr[:, -1].ravel()]
    )
    bg = float(border.mean(dtype=np.float64)) / 255.0
    flip = invert == "always" or (invert == "auto" and bg > 0.5)
    if flip:
        img = ImageOps.invert(img)
        bg = 1.0 - bg
    if fit == "crop":
        img = ImageOps.fit(img, (size, size), method=Image.Resampling.BILINEAR)
    else:
        fill = int(round(bg * 255)) if mode == "L" else (int(round(bg * 255)),) * 3
        img = ImageOps.pad(img, (size, size), method=Image.Resampling.BILINEAR, color=fill)
    out = np.asarray(img, dtype=np.float32) / 255.0
    out = out[None] if channels == 1 else out.transpose(2, 0, 1)
    return np.ascontiguousarray(out), flip


class ImagePreprocessor:
    """Validated upload bytes -> ((C, S, S) model input, near-duplicate signature).

    Separate from the model so the CPU-bound decoding can run at the edge (the ingress),
    away from the model replicas, as the book splits preprocessing from inference.
    """

    def __init__(
        self,
        cfg: EncoderConfig,
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ):
        self.cfg, self.max_bytes, self.max_pixels = cfg, max_bytes, max_pixels

    def __call__(self, data: bytes) -> tuple[np.ndarray, str]:
        x, signature, _ = self.prepare(data)
        return x, signature

    def prepare(self, data: bytes) -> tuple[np.ndarray, str, dict[str, float]]:
        """Also the upload's drift features (:func:`drift_features`), one float each."""
        img = decode_image(data, self.max_bytes, self.max_pixels, target=self.cfg.image_size)
        x, flipped = model_input(img, self.cfg)
        feats = {k: float(v[0]) for k, v in drift_features(x[None], np.array([flipped])).items()}
        return x, dhash(x), feats


def drift_features(x: np.ndarray, flipped: np.ndarray) -> dict[str, np.ndarray]:
    """(N, C, S, S) model inputs + whether each was flipped to a dark background -> the input
    features drift monitoring follows, (N,) each: the image statistics of the encoder's input
    and the share of uploads that needed flipping (a population of photos on white, say)."""
    return {**image_statistics(x), "flipped": np.asarray(flipped, np.float64)}
