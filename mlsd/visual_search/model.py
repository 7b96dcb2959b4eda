"""Image encoders for visual search: our contrastive CNN and an ImageNet-pretrained baseline.

Each encoder maps a (B, C, H, W) float batch in [0, 1] to L2-normalised embeddings (B, D), so
the inner product of two embeddings is their cosine similarity (the book's similarity choice).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mlsd.backbones import EfficientNetLite0Encoder


@dataclass
class EncoderConfig:
    """Everything needed to rebuild an encoder from its weights (kept in the manifest)."""

    arch: str = "convnet"  # convnet | efficientnet_lite0 | fusion (convnet + efficientnet)
    in_channels: int = 1
    image_size: int = 28
    width: int = 32
    embed_dim: int = 128
    proj_dim: int = 64
    pretrained_size: int = 160  # input size of the ImageNet backbone in "fusion"
    fusion_weight: float = 0.5  # share of our CNN in the fused cosine similarity

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> EncoderConfig:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


class ConvEncoder(nn.Module):
    """A small VGG-style CNN for small images, trained contrastively (SimCLR).

    ``forward`` gives the retrieval embedding (the representation before the projection head,
    as SimCLR recommends); ``project`` gives the head's output the contrastive loss sees.
    """

    def __init__(self, cfg: EncoderConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or EncoderConfig()
        w = cfg.width
        self.features = nn.Sequential(
            _block(cfg.in_channels, w),
            nn.MaxPool2d(2),  # (B, w, H/2, W/2)
            _block(w, 2 * w),
            _block(2 * w, 2 * w),
            nn.MaxPool2d(2),  # (B, 2w, H/4, W/4)
            _block(2 * w, 4 * w),
            _block(4 * w, 4 * w),
            nn.AdaptiveAvgPool2d(1),  # (B, 4w, 1, 1)
            nn.Flatten(),
        )
        self.embed = nn.Sequential(nn.Linear(4 * w, cfg.embed_dim), nn.BatchNorm1d(cfg.embed_dim))
        self.head = nn.Sequential(
            nn.ReLU(inplace=True),
            nn.Linear(cfg.embed_dim, cfg.embed_dim),
            nn.ReLU(inplace=True),
            nn.Linear(cfg.embed_dim, cfg.proj_dim),
        )

    def representation(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed(self.features(x))  # (B, D)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.representation(x), dim=-1)  # (B, D)

    def project(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.representation(x))  # (B, P)


class FusionEncoder(nn.Module):
    """Late fusion of two views of an image: our contrastive CNN (trained on the catalogue's
    domain, native resolution) and a frozen ImageNet EfficientNet-Lite0 (generic shapes and
    textures). Each embedding is L2-normalised and scaled by sqrt(w) and sqrt(1 - w), so the
    fused cosine similarity is w * cos(ours) + (1 - w) * cos(pretrained).

    Only ``ours`` trains (``project`` is its head); the backbone stays frozen in eval mode.
    """

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.cfg = cfg
        self.ours = ConvEncoder(cfg)
        self.pretrained = EfficientNetLite0Encoder(image_size=cfg.pretrained_size)
        for p in self.pretrained.parameters():
            p.requires_grad_(False)
        self.register_buffer("w", torch.tensor([cfg.fusion_weight, 1.0 - cfg.fusion_weight]).sqrt())

    def train(self, mode: bool = True):
        super().train(mode)
        self.pretrained.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.ours(x) * self.w[0]  # (B, D1)
        b = self.pretrained(x) * self.w[1]  # (B, 1280)
        return F.normalize(torch.cat([a, b], dim=-1), dim=-1)  # (B, D1 + 1280)

    def project(self, x: torch.Tensor) -> torch.Tensor:
        return self.ours.project(x)


def build_encoder(cfg: EncoderConfig) -> nn.Module:
    if cfg.arch == "convnet":
        return ConvEncoder(cfg)
    if cfg.arch == "efficientnet_lite0":
        model = EfficientNetLite0Encoder(image_size=cfg.image_size)
        model.cfg = cfg
        return model
    if cfg.arch == "fusion":
        return FusionEncoder(cfg)
    raise ValueError(f"unknown encoder arch {cfg.arch!r} (convnet, efficientnet_lite0, fusion)")


def trainable_part(model: nn.Module) -> nn.Module:
    """The module contrastive training updates (the CNN inside a fusion encoder)."""
    return model.ours if isinstance(model, FusionEncoder) else model
