"""Upload decoding: every bad upload becomes one typed error with a clear message."""

import io

import numpy as np
import pytest
from PIL import Image

from mlsd.image import (
    InvalidImage,
    decode_image,
    dhash,
    hamming,
)
from tests.conftest import jpeg_bytes, png_bytes


def test_decodes_png_andjpeg_bytes():
    arr = (np.random.default_rng(0).random((40, 30, 3)) * 255).astype(np.uint8)
    assert decode_image(png_bytes(arr)).size == (30, 40)
    assert decode_image(jpeg_bytes(arr)).mode == "RGB"


@pytest.mark.parametrize(
    "data, needle",
    [
        (b"", "empty"),
        (b"hello, I am not an image at all", "not an image"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 20, "not an image|corrupt"),
    ],
)
def test_bad_bytes(data, needle):
    with pytest.raises(InvalidImage, match=needle):
        decode_image(data)


def test_truncatedjpeg_bytes():
    data = jpeg_bytes(np.full((64, 64, 3), 128, np.uint8))
    with pytest.raises(InvalidImage, match="truncated|corrupt"):
        decode_image(data[: len(data) // 2])


def test_pixel_limit_checked_before_decoding():
    data = png_bytes(np.zeros((100, 100), np.uint8))
    with pytest.raises(InvalidImage, match="over the limit") as e:
        decode_image(data, max_pixels=5_000)
    assert e.value.status == 413


def test_decompression_bomb():
    # a tiny PNG that claims 20000 x 20000 pixels
    img = Image.new("1", (20000, 20000))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    assert len(buf.getvalue()) < 200_000
    with pytest.raises(InvalidImage) as e:
        decode_image(buf.getvalue())
    assert e.value.status == 413


def test_byte_limit():
    with pytest.raises(InvalidImage, match="bytes"):
        decode_image(b"x" * 101, max_bytes=100)


def test_dhash_near_duplicates():
    rng = np.random.default_rng(0)
    a = (rng.random((28, 28)) * 255).astype(np.uint8)
    b = np.clip(a.astype(int) + 3, 0, 255).astype(np.uint8)  # brightness shift
    c = (rng.random((28, 28)) * 255).astype(np.uint8)
    assert hamming(dhash(a), dhash(b)) <= 3
    assert hamming(dhash(a), dhash(c)) > 10
