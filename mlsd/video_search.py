"""The visual branch of video search: text and videos embedded in one space.

Frame level, as the book's first option: every sampled frame goes through ImageNet
EfficientNet-Lite0 (pooled 1280-d features + 1000 class probabilities); the video is pooled
over time (mean). Two ways into the text encoder's space (all-MiniLM-L6-v2, 384-d):

- **zero-shot**: the mean class probabilities weigh the text embeddings of the class names
  ("a photo of a {class}"): no video-text training at all.
- **contrastive**: learned residual heads on both sides (video: 1280 pooled features -> 384,
  text: 384 -> 384), trained with the book's loss (in-batch negatives, softmax over
  similarities with a temperature, cross-entropy, both directions). Both heads start at zero,
  so the trained model starts as the zero-shot one and only moves as far as training says.

The video-level alternative (a video encoder over the clip, e.g. a 3D CNN / ViViT) is a
documented option, not built here: nothing pretrained of that kind installs offline.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mlsd.artifacts import ArtifactError

PROMPT = "a photo of a {}"


def imagenet_classes() -> list[str]:
    """The 1000 ImageNet class names, from torchvision's metadata (offline)."""
    from torchvision.models import ResNet50_Weights

    return list(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])


class FrameEncoder:
    """uint8 frames (N, S, S, 3) -> (features (N, 1280), class probabilities (N, 1000))."""

    def __init__(self, device: str = "cpu", batch_size: int = 32):
        from mlsd.models.encoder import EfficientNetLite0Encoder

        self.net = EfficientNetLite0Encoder().net.eval().to(device)
        self.device, self.batch_size = torch.device(device), batch_size

    @torch.inference_mode()
    def __call__(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        feats, probs = [], []
        for s in range(0, len(frames), self.batch_size):
            x = torch.as_tensor(frames[s : s + self.batch_size]).to(self.device)
            x = (x.permute(0, 3, 1, 2).float() - 127.0) / 128.0  # the TF weights' scaling
            f = self.net.extract_features(x).mean(dim=(2, 3))  # (B, 1280)
            logits = self.net._fc(self.net._dropout(f))  # (B, 1000), = net(x) in eval mode
            feats.append(f.float().cpu().numpy())
            probs.append(torch.softmax(logits.float(), -1).cpu().numpy())
        return np.concatenate(feats), np.concatenate(probs)


@dataclass
class VideoTextConfig:
    feat_dim: int = 1280
    text_dim: int = 384
    n_classes: int = 1000
    temperature: float = 0.05  # initial; learned

    def to_dict(self) -> dict:
        return asdict(self)


class VideoTextModel(nn.Module):
    """Residual heads over frozen encoders; zero-init, so it starts as the zero-shot model."""

    def __init__(self, cfg: VideoTextConfig, class_text: np.ndarray):
        super().__init__()
        self.cfg = cfg
        self.register_buffer("class_text", torch.as_tensor(class_text, dtype=torch.float32))
        self.video_head = nn.Sequential(
            nn.Linear(cfg.feat_dim, 512), nn.ReLU(), nn.Linear(512, cfg.text_dim)
        )
        self.text_head = nn.Linear(cfg.text_dim, cfg.text_dim)
        for head in (self.video_head[-1], self.text_head):
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)
        self.log_scale = nn.Parameter(torch.tensor(float(np.log(1 / cfg.temperature))))

    def zero_shot(self, probs: torch.Tensor) -> torch.Tensor:  # (B, 1000) -> (B, D)
        return F.normalize(probs @ self.class_text, dim=-1)

    def embed_video(self, feats: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
        """Time-pooled (B, 1280) features and (B, 1000) probabilities -> (B, D) unit vectors."""
        return F.normalize(self.zero_shot(probs) + self.video_head(feats), dim=-1)

    def embed_text(self, text: torch.Tensor) -> torch.Tensor:  # (B, D) sentence embeddings
        t = F.normalize(text, dim=-1)
        return F.normalize(t + self.text_head(t), dim=-1)

    def loss(self, feats, probs, text) -> torch.Tensor:
        """The book's picture: similarities of a batch of pairs, softmax with temperature,
        cross-entropy against the diagonal, video->text and text->video."""
        v, t = self.embed_video(feats, probs), self.embed_text(text)
        logits = self.log_scale.exp().clamp(max=100) * v @ t.T  # (B, B)
        target = torch.arange(len(v), device=v.device)
        return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


def pool_video(feats: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Frame level -> video level: mean over time."""
    return feats.mean(0), probs.mean(0)


class VideoEmbedder:
    """Frames -> one video vector in text space (the indexing path)."""

    def __init__(self, model: VideoTextModel, frame_encoder: FrameEncoder | None = None):
        self.model = model.eval()
        self.frames = frame_encoder or FrameEncoder()

    @torch.inference_mode()
    def __call__(self, frames: np.ndarray) -> np.ndarray:
        f, p = pool_video(*self.frames(frames))
        v = self.model.embed_video(torch.as_tensor(f)[None], torch.as_tensor(p)[None])
        return v[0].numpy()


class QueryEncoder:
    """Query texts -> vectors in the same space (the search path)."""

    def __init__(self, model: VideoTextModel, sentence_encoder):
        self.model, self.text = model.eval(), sentence_encoder

    @torch.inference_mode()
    def __call__(self, texts: list[str]) -> np.ndarray:
        t = torch.as_tensor(self.text.encode(texts))
        return self.model.embed_text(t).numpy()


def load_video_text(art) -> VideoTextModel:
    """The model of a ``video_text`` artifact (class prompt embeddings are in its state)."""
    try:
        state = torch.load(art.file("model.pt"), weights_only=True)
        model = VideoTextModel(VideoTextConfig(**art.config["model"]), state["class_text"])
        model.load_state_dict(state)
    except ArtifactError:
        raise
    except (KeyError, TypeError, RuntimeError, OSError, EOFError) as e:
        raise ArtifactError(f"video_text artifact {art.version} unusable: {e}") from e
    return model.eval()


def write_video_text_artifact(
    store,
    name: str,
    model: VideoTextModel,
    config: dict,
    data: dict | None = None,
    metrics: dict | None = None,
    version: str | None = None,
) -> str:
    writer = store.new_version(name, version)
    torch.save(model.state_dict(), writer.path("model.pt"))
    return writer.commit(
        config={"model": model.cfg.to_dict(), **config}, data=data or {}, metrics=metrics or {}
    )


def zero_shot_model(sentence_encoder) -> VideoTextModel:
    """The model with no video-text training: class probabilities -> class-name text space."""
    class_text = sentence_encoder.encode([PROMPT.format(c) for c in imagenet_classes()])
    return VideoTextModel(VideoTextConfig(), class_text).eval()
