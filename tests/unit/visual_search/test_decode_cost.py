"""A big image under the pixel cap costs memory in proportion to the model input, not to
its claimed size: JPEGs decode at reduced scale, no full-size float copy is made."""

from __future__ import annotations

import io
import tracemalloc

import numpy as np
from PIL import Image

from mlsd.image import decode_image
from mlsd.visual_search.features import ImagePreprocessor
from mlsd.visual_search.model import EncoderConfig


def _encode(img: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def test_a_large_jpeg_decodes_at_reduced_scale():
    big = Image.fromarray(np.full((4000, 6000, 3), 200, np.uint8))
    img = decode_image(_encode(big, "JPEG"), target=28)
    assert max(img.size) <= 400  # draft 1/8 then reduce, not 6000 x 4000


def test_a_small_png_of_many_pixels_makes_no_full_size_float_copy():
    data = _encode(Image.new("L", (6000, 6000), 0), "PNG")
    assert len(data) < 200_000  # a tiny upload that claims 36 MP
    pre = ImagePreprocessor(EncoderConfig(width=8, embed_dim=32, proj_dim=16))
    tracemalloc.start()
    x, _ = pre(data)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert x.shape == (1, 28, 28)
    assert peak < 20 * 1024 * 1024  # numpy's allocations: a float32 copy would be 144 MB
