"""SYNTHETIC data, labelled synthetic wherever it is shown.

1. :func:`meme_set` - a multimodal set in which harm lives in the *combination* of caption and
   image, the meme case the book gives for early fusion: each caption topic and each image topic
   is benign on its own (every topic is harmful in exactly half of its pairings, so neither
   modality alone says anything), but certain caption + image pairs are harmful together. A few
   caption topics are harmful whatever the image (text-only evidence, which late fusion can
   use). No real multimodal harm data exists offline.
2. :func:`natural_labels` - "natural" labels as the book describes them (user reports), simulated
   from the human labels with a documented noise model, for the natural-vs-human experiment.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SYNTHETIC = "SYNTHETIC"


@dataclass
class MemeSet:
    text: np.ndarray  # (N, text_dim) unit vectors: caption topic prototype + noise
    image: np.ndarray  # (N, image_dim) unit vectors: image topic prototype + noise
    y: np.ndarray  # (N,) 0 / 1
    text_topic: np.ndarray  # (N,)
    image_topic: np.ndarray  # (N,)
    kind: str = SYNTHETIC


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def meme_set(
    n: int,
    text_dim: int = 512,
    image_dim: int = 64,
    topics: int = 8,
    text_only_harmful: int = 1,
    noise: float = 0.25,
    seed: int = 0,
    prototypes_seed: int = 1234,
) -> MemeSet:
    """``n`` synthetic posts. Pairs are harmful where ``(text_topic + image_topic)`` is odd
    (so every topic is harmful with half of the others: no marginal signal), plus the last
    ``text_only_harmful`` caption topics, harmful with any image. The topic prototypes come
    from ``prototypes_seed`` (shared by train and test sets); the posts from ``seed``."""
    proto = np.random.default_rng(prototypes_seed)
    t_proto = _unit(proto.normal(size=(topics, text_dim)))
    i_proto = _unit(proto.normal(size=(topics, image_dim)))
    rng = np.random.default_rng(seed)
    tt, it = rng.integers(0, topics, n), rng.integers(0, topics, n)
    y = ((tt + it) % 2 == 1) | (tt >= topics - text_only_harmful)
    text = _unit(t_proto[tt] + noise * rng.normal(size=(n, text_dim)) / np.sqrt(text_dim) * 4)
    image = _unit(i_proto[it] + noise * rng.normal(size=(n, image_dim)) / np.sqrt(image_dim) * 4)
    return MemeSet(text, image, y.astype(np.float32), tt, it)


def natural_labels(
    y: np.ndarray, seed: int = 0, report_rate: float = 0.6, false_report_rate: float = 0.05
) -> np.ndarray:
    """SYNTHETIC natural labels from human labels ``y`` (0 / 1): a harmful post is reported
    (label 1) with probability ``report_rate`` (many harmful posts are never reported); a
    benign one is reported anyway with probability ``false_report_rate`` (disagreement,
    brigading). Reports are the only natural signal, so unreported harm reads as benign."""
    rng = np.random.default_rng(seed)
    y = np.asarray(y).astype(bool)
    u = rng.random(len(y))
    return np.where(y, u < report_rate, u < false_report_rate).astype(np.float32)
