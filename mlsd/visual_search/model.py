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

    arch: str = "convnet"  # convnet | efficientnet_lite0 | fusion | adapted (see build_encoder)
    # the model's input, chosen for the data and read by serving (features.prepare_array):
    in_channels: int = 1  # 1 = greyscale (the Fashion-MNIST demo), 3 = RGB photos
    image_size: int = 28  # the square side the image is fitted to
    invert: str = "auto"  # auto: flip bright backgrounds to dark (the demo); never; always
    fit: str = "pad"  # pad: keep the whole image, pad to a square; crop: the centre square
    width: int = 32
    embed_dim: int = 128
    proj_dim: int = 64
    pretrained_size: int = 160  # input size of the ImageNet backbone in "fusion"
    fusion_weight: float = 0.5  # share of our CNN in the fused cosine similarity
    hidden_dim: int = 1024  # "adapted": the projection head's hidden layer

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


class ProjectionHead(nn.Module):
    """The trained part of an "adapted" encoder: (B, 1280) frozen backbone features ->
    (B, embed_dim) L2-normalised. Trained self-supervised on the user's own photos
    (:mod:`mlsd.visual_search.contrastive`'s NT-Xent over augmented views and mined
    neighbours), it re-weights the generic ImageNet features for what separates *this*
    catalogue's items; on the flowers it lifts P@10 well above the frozen features
    (README, "Your own data")."""

    def __init__(self, cfg: EncoderConfig, in_dim: int = 1280):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_dim, cfg.hidden_dim),
            nn.BatchNorm1d(cfg.hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(cfg.hidden_dim, cfg.embed_dim),
        )

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.net(feats), dim=-1)  # (B, D)

    def project(self, feats: torch.Tensor) -> torch.Tensor:
        """What the contrastive loss sees: the embedding itself (the head is the projection)."""
        return self.net(feats)


class AdaptedEncoder(nn.Module):
    """RGB photos at ``image_size`` -> frozen ImageNet EfficientNet-Lite0 -> trained
    :class:`ProjectionHead`. Only the head trains, on backbone features of augmented views
    computed once by Ray Data, so training costs minutes on CPUs at any catalogue size;
    serving runs the whole graph as one ONNX model."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.cfg = cfg
        self.backbone = EfficientNetLite0Encoder(image_size=cfg.image_size)
        for p in self.backbone.parameters():
            p.requires_grad_(False)
        self.head = ProjectionHead(cfg, self.backbone.embed_dim)

    def train(self, mode: bool = True):
        super().train(mode)
        self.backbone.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))  # (B, C, S, S) -> (B, 1280) -> (B, D)


def build_encoder(cfg: EncoderConfig) -> nn.Module:
    if cfg.arch == "convnet":
        return ConvEncoder(cfg)
    if cfg.arch == "efficientnet_lite0":
        model = EfficientNetLite0Encoder(image_size=cfg.image_size)
        model.cfg = cfg
        return model
    if cfg.arch == "fusion":
        return FusionEncoder(cfg)
    if cfg.arch == "adapted":
        return AdaptedEncoder(cfg)
    raise ValueError(
        f"unknown encoder arch {cfg.arch!r} (convnet, efficientnet_lite0, fusion, adapted)"
    )


def trainable_part(model: nn.Module) -> nn.Module:
    """The module contrastive training updates (the CNN inside a fusion encoder, the head of
    an adapted one)."""
    if isinstance(model, FusionEncoder):
        return model.ours
    return model.head if isinstance(model, AdaptedEncoder) else model
