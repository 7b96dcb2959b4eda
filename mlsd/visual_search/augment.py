"""Augmentations of contrastive training (the book's SimCLR-style views of one image)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


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


def photo_augment(size: int, strength: float = 1.0):
    """Views of an RGB photo for an adapted encoder: crop-and-resize and flips, mild colour
    jitter (hue barely: colour is often what tells two products, or two flowers, apart).
    Applies to a (C, H, W) float tensor."""
    from torchvision.transforms import v2

    s = strength
    jitter = v2.ColorJitter(brightness=0.3 * s, contrast=0.3 * s, saturation=0.2 * s, hue=0.02 * s)
    return v2.Compose(
        [
            v2.RandomResizedCrop(size, scale=(max(0.08, 1 - 0.75 * s), 1.0), antialias=True),
            v2.RandomHorizontalFlip(),
            v2.RandomApply([jitter], p=0.8),
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
