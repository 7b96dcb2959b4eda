"""Image decoding (safe against bad uploads), preprocessing, augmentations, near-dup signatures.

Everything the serving path accepts from a user passes :func:`decode_image` first, which turns
every way an upload can be wrong into one typed :class:`InvalidImage` with a clear message.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

DEFAULT_MAX_BYTES = 20 * 1024 * 1024  # 20 MiB per upload
DEFAULT_MAX_PIXELS = 40_000_000  # 40 MP: beyond this, decoding is a decompression bomb


class InvalidImage(ValueError):
    """An upload that is not a usable image; the message says why.

    ``status`` is the HTTP status a service should answer with (413 for size limits).
    """

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def decode_image(
    data: bytes, max_bytes: int = DEFAULT_MAX_BYTES, max_pixels: int = DEFAULT_MAX_PIXELS
) -> Image.Image:
    """Decode bytes into a fully loaded RGB or L image, or raise :class:`InvalidImage`.

    The pixel limit is checked on the header, before any pixel is decoded.
    """
    if not data:
        raise InvalidImage("empty upload (0 bytes)")
    if len(data) > max_bytes:
        raise InvalidImage(
            f"upload of {len(data)} bytes is over the limit of {max_bytes} bytes", 413
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            w, h = img.size
            if w <= 0 or h <= 0:
                raise InvalidImage(f"image has no pixels ({w}x{h})")
            if w * h > max_pixels:
                raise InvalidImage(
                    f"image of {w}x{h} = {w * h} pixels is over the limit of {max_pixels}", 413
                )
            img.load()
    except InvalidImage:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise InvalidImage(f"image rejected as a decompression bomb: {e}", 413) from e
    except UnidentifiedImageError as e:
        raise InvalidImage("not an image (unrecognised format)") from e
    except (OSError, SyntaxError, ValueError) as e:
        raise InvalidImage(f"corrupt or truncated image: {e}") from e
    if getattr(img, "n_frames", 1) > 1:
        img.seek(0)
    img = ImageOps.exif_transpose(img)
    return img.convert("L") if img.mode in ("1", "L", "I", "I;16", "F") else img.convert("RGB")


def to_array(
    img: Image.Image, size: int = 28, channels: int = 1, invert: str = "auto"
) -> np.ndarray:
    """Image -> (channels, size, size) float32 in [0, 1], the encoder's input.

    Keeps the aspect ratio (pads to a square with the background colour). ``invert``: "auto"
    flips bright-background photos to the dark-background convention of the training set
    (Fashion-MNIST shows light garments on black); "never" / "always" force it.
    """
    mode = "L" if channels == 1 else "RGB"
    img = img.convert(mode)
    arr = np.asarray(img, dtype=np.float32) / 255.0
    border = np.concatenate(
        [arr[0].ravel(), arr[-1].ravel(), arr[:, 0].ravel(), arr[:, -1].ravel()]
    )
    bg = float(border.mean())
    flip = invert == "always" or (invert == "auto" and bg > 0.5)
    if flip:
        img = ImageOps.invert(img)
        bg = 1.0 - bg
    fill = int(round(bg * 255)) if mode == "L" else (int(round(bg * 255)),) * 3
    img = ImageOps.pad(img, (size, size), method=Image.Resampling.BILINEAR, color=fill)
    out = np.asarray(img, dtype=np.float32) / 255.0
    out = out[None] if channels == 1 else out.transpose(2, 0, 1)
    return np.ascontiguousarray(out)


def images_to_tensor(images: np.ndarray) -> torch.Tensor:
    """(N, H, W) or (N, C, H, W) uint8 -> (N, C, H, W) float32 in [0, 1]."""
    arr = np.asarray(images)
    t = torch.from_numpy(arr if arr.flags.writeable else arr.copy())
    if t.ndim == 3:
        t = t[:, None]
    return t.float().div_(255.0) if t.dtype == torch.uint8 else t.float()


def simclr_augment(size: int = 28, strength: float = 1.0):
    """SimCLR views for small grey images, from torchvision.transforms.v2.

    Crop-and-resize is the key augmentation; flips, contrast/brightness and erasing make the
    model ignore what does not define an item. Applies to a (C, H, W) float tensor.
    """
    from torchvision.transforms import v2

    s = strength
    return v2.Compose(
        [
            v2.RandomResizedCrop(size, scale=(max(0.08, 1 - 0.75 * s), 1.0), antialias=True),
            v2.RandomHorizontalFlip(),
            v2.RandomApply([v2.ColorJitter(brightness=0.4 * s, contrast=0.4 * s)], p=0.8),
            v2.RandomErasing(p=0.25 * s, scale=(0.02, 0.15), value=0.0),
        ]
    )


class BatchAugment:
    """The same SimCLR augmentations as :func:`simclr_augment`, drawn per image but applied to
    a whole (B, C, H, W) batch at once (one ``affine_grid`` + ``grid_sample``), so augmenting
    costs little next to the model step, on CPU or GPU. Per-sample torchvision pipelines were
    the bottleneck of a training step on 2 CPU cores.
    """

    def __init__(self, strength: float = 1.0, generator: torch.Generator | None = None):
        self.s = strength
        self.min_scale = max(0.08, 1 - 0.75 * strength)
        self.g = generator

    def _u(self, n: int, lo: float, hi: float, device) -> torch.Tensor:
        return torch.rand(n, generator=self.g).to(device) * (hi - lo) + lo

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        import math

        import torch.nn.functional as F

        b, dev = x.shape[0], x.device
        area = self._u(b, self.min_scale, 1.0, dev)
        r = math.log(4 / 3) * min(1.0, self.s)  # aspect-ratio jitter, none at strength 0
        log_r = self._u(b, -r, r, dev)
        ratio = torch.exp(log_r)
        w = torch.sqrt(area * ratio).clamp(max=1.0)  # crop width, fraction of the image
        h = torch.sqrt(area / ratio).clamp(max=1.0)
        cx = (self._u(b, -1.0, 1.0, dev)) * (1 - w)
        cy = (self._u(b, -1.0, 1.0, dev)) * (1 - h)
        flip = torch.where(self._u(b, 0, 1, dev) < 0.5, -1.0, 1.0)
        theta = torch.zeros(b, 2, 3, device=dev)
        theta[:, 0, 0], theta[:, 0, 2] = w * flip, cx
        theta[:, 1, 1], theta[:, 1, 2] = h, cy
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        jitter = (self._u(b, 0, 1, dev) < 0.8).float()[:, None, None, None]
        bright = self._u(b, 1 - 0.4 * self.s, 1 + 0.4 * self.s, dev)[:, None, None, None]
        contrast = self._u(b, 1 - 0.4 * self.s, 1 + 0.4 * self.s, dev)[:, None, None, None]
        mean = out.mean(dim=(1, 2, 3), keepdim=True)
        jittered = ((out * bright - mean * bright) * contrast + mean * bright).clamp(0, 1)
        out = jitter * jittered + (1 - jitter) * out
        # random erasing: p = 0.25 * strength, 2-15 % of the area
        hh, ww = x.shape[-2:]
        erase = self._u(b, 0, 1, dev) < 0.25 * self.s
        ea = self._u(b, 0.02, 0.15, dev)
        eh = (torch.sqrt(ea) * hh).round().clamp(1, hh)
        ew = (torch.sqrt(ea) * ww).round().clamp(1, ww)
        ey = (self._u(b, 0, 1, dev) * (hh - eh)).floor()
        ex = (self._u(b, 0, 1, dev) * (ww - ew)).floor()
        ys = torch.arange(hh, device=dev)[None, :, None]
        xs = torch.arange(ww, device=dev)[None, None, :]
        mask = (
            (ys >= ey[:, None, None])
            & (ys < (ey + eh)[:, None, None])
            & (xs >= ex[:, None, None])
            & (xs < (ex + ew)[:, None, None])
            & erase[:, None, None]
        )
        return out.masked_fill(mask[:, None], 0.0)


def dhash(img: Image.Image | np.ndarray, bits: int = 8) -> str:
    """Difference hash: a 64-bit near-duplicate signature (hex), robust to resizing and tone.

    Two images whose signatures differ in few bits (see :func:`hamming`) are near-duplicates.
    """
    if isinstance(img, np.ndarray):
        a = img.squeeze()
        if a.dtype != np.uint8:
            a = np.clip(a * 255.0 if a.max() <= 1.0 else a, 0, 255).astype(np.uint8)
        img = Image.fromarray(a if a.ndim == 2 else a.transpose(1, 2, 0))
    small = img.convert("L").resize((bits + 1, bits), Image.Resampling.BILINEAR)
    px = np.asarray(small, dtype=np.int16)
    diff = (px[:, 1:] > px[:, :-1]).ravel()
    value = 0
    for b in diff:
        value = (value << 1) | int(b)
    return f"{value:0{bits * bits // 4}x}"


def hamming(a: str, b: str) -> int:
    """Bits that differ between two hex signatures."""
    return (int(a, 16) ^ int(b, 16)).bit_count()
