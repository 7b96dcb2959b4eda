"""Image decoding (safe against bad uploads), batch conversion, near-duplicate signatures.

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
    data: bytes,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    target: int | None = None,
) -> Image.Image:
    """Decode bytes into a fully loaded RGB or L image, or raise :class:`InvalidImage`.

    The pixel limit is checked on the header, before any pixel is decoded. ``target``: the
    side the caller will resize to; a JPEG is then decoded at a reduced scale (``draft``) and
    any image far larger is shrunk by an integer factor (``reduce``) at once, so memory is
    bounded by the target, not by what the upload claims.
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
            if target is not None and img.format == "JPEG":
                img.draft(img.mode, (2 * target, 2 * target))  # DCT scaling: 1/2 .. 1/8
            img.load()
            if target is not None and (f := min(img.size) // (2 * target)) >= 2:
                img = img.reduce(f)  # box filter, integer factor: cheap and alias-free
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


def encode_image(img: Image.Image | np.ndarray, size: int | None = None) -> tuple[bytes, str]:
    """An image (or (H, W) / (H, W, 3) uint8 array) as bytes a browser shows, -> (bytes,
    media type). ``size``: shrink so the longer side is at most this (a thumbnail; never
    enlarged). Greyscale / transparency -> PNG, else JPEG."""
    img = Image.fromarray(np.asarray(img, np.uint8)) if isinstance(img, np.ndarray) else img
    if size is not None:
        img = img.copy()
        img.thumbnail((size, size), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    if img.mode in ("L", "LA", "RGBA", "P", "1"):
        img.save(out, format="PNG", optimize=True)
        return out.getvalue(), "image/png"
    img.convert("RGB").save(out, format="JPEG", quality=85)
    return out.getvalue(), "image/jpeg"


def stored_image(data: bytes, size: int | None = None) -> tuple[bytes, str]:
    """Bytes an upload was stored as -> (bytes, media type) to answer with: the original as
    uploaded, or a ``size`` thumbnail of it (decoded with the upload limits)."""
    if size is None:
        with Image.open(io.BytesIO(data)) as img:
            mime = Image.MIME.get(img.format or "", "application/octet-stream")
        return data, mime
    return encode_image(decode_image(data, target=size), size)


def images_to_tensor(images: np.ndarray) -> torch.Tensor:
    """(N, H, W) or (N, C, H, W) uint8 -> (N, C, H, W) float32 in [0, 1]."""
    arr = np.asarray(images)
    t = torch.from_numpy(arr if arr.flags.writeable else arr.copy())
    if t.ndim == 3:
        t = t[:, None]
    return t.float().div_(255.0) if t.dtype == torch.uint8 else t.float()


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


def image_statistics(x: np.ndarray) -> dict[str, np.ndarray]:
    """Input properties that drift monitoring follows, per image of a (N, C, H, W) batch in
    [0, 1] (or one (C, H, W) image): brightness, contrast, edge energy, the log ratio of
    horizontal to vertical gradients (a 90-degree rotation flips its sign), top-minus-bottom
    brightness (upside down flips it) and, for colour, saturation. Each is (N,)."""
    x = np.asarray(x, np.float32)
    x = x[None] if x.ndim == 3 else x  # (N, C, H, W)
    grey = x.mean(1)  # (N, H, W)
    dx = np.abs(np.diff(grey, axis=2)).mean((1, 2))
    dy = np.abs(np.diff(grey, axis=1)).mean((1, 2))
    half = grey.shape[1] // 2
    out = {
        "brightness": grey.mean((1, 2)),
        "contrast": grey.std((1, 2)),
        "edges": dx + dy,
        "anisotropy": np.log((dx + 1e-3) / (dy + 1e-3)),
        "vertical_balance": grey[:, :half].mean((1, 2)) - grey[:, -half:].mean((1, 2)),
    }
    if x.shape[1] == 3:
        out["saturation"] = (x.max(1) - x.min(1)).mean((1, 2))
    return {k: v.astype(np.float64) for k, v in out.items()}
