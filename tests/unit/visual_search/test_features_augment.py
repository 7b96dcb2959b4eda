"""Upload decoding: every bad upload becomes one typed error with a clear message."""

import numpy as np
import torch
from PIL import Image

from mlsd.visual_search.augment import BatchAugment, simclr_augment
from mlsd.visual_search.features import to_array


def test_to_array_inverts_bright_backgrounds_and_keeps_dark_ones():
    dark = np.zeros((50, 80), np.uint8)
    dark[10:40, 20:60] = 200  # light object on black, like Fashion-MNIST
    x = to_array(Image.fromarray(dark), size=28)
    assert x.shape == (1, 28, 28) and x.dtype == np.float32
    assert x[0, 0, 0] < 0.1 and x.max() > 0.7
    photo = 255 - dark  # dark object on white, like a product photo
    y = to_array(Image.fromarray(photo), size=28)
    np.testing.assert_allclose(x, y, atol=0.02)


def test_augmentations_shapes_and_ranges():
    x = torch.rand(16, 1, 28, 28)
    g = torch.Generator().manual_seed(0)
    out = BatchAugment(generator=g)(x)
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    assert not torch.allclose(out, x)
    tv = simclr_augment(28)(x[0])
    assert tv.shape == (1, 28, 28)


def test_batch_augment_identity_when_no_crop():
    # at strength 0 the crop covers the image; only flips remain, so pixels are preserved
    x = torch.rand(8, 1, 28, 28)
    out = BatchAugment(strength=0.0, generator=torch.Generator().manual_seed(1))(x)
    flipped = torch.flip(x, dims=[-1])
    for i in range(len(x)):
        same = torch.allclose(out[i], x[i], atol=1e-5) or torch.allclose(
            out[i], flipped[i], atol=1e-5
        )
        assert same
