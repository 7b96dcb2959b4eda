"""A synthetic video-caption training set, honest about what it is.

No real video-caption set is reachable offline, so "videos" are montages of real labelled
images (Fashion-MNIST) and captions are generated from their labels: a clip is 4 frames showing
one or two kinds of clothing, captioned e.g. "footage of sneakers and a handbag". Everything
trained or measured on it is labelled synthetic.
"""

from __future__ import annotations

import itertools

import numpy as np

CLASS_WORDS = {
    0: ["a t-shirt", "a tee", "a top"],
    1: ["trousers", "pants"],
    2: ["a pullover", "a sweater", "a jumper"],
    3: ["a dress"],
    4: ["a coat", "a jacket"],
    5: ["sandals"],
    6: ["a shirt", "a button-up shirt"],
    7: ["sneakers", "trainers", "running shoes"],
    8: ["a bag", "a handbag"],
    9: ["ankle boots", "boots"],
}
TEMPLATES = ["a video of {}", "a clip showing {}", "footage of {}", "a short film about {}"]
FRAMES_PER_CLIP = 4


def all_captions() -> list[str]:
    """Every caption the sampler can produce (so their embeddings are computed once)."""
    singles = [w for ws in CLASS_WORDS.values() for w in ws]
    pairs = [
        f"{a} and {b}"
        for c1, c2 in itertools.permutations(CLASS_WORDS, 2)
        for a in CLASS_WORDS[c1]
        for b in CLASS_WORDS[c2]
    ]
    return [t.format(x) for t in TEMPLATES for x in singles + pairs]


class ClipSampler:
    """Draws (frame indices (B, 4), caption ids (B,)) from images grouped by label."""

    def __init__(self, labels: np.ndarray, seed: int = 0):
        self.by_class = {c: np.flatnonzero(labels == c) for c in CLASS_WORDS}
        self.caption_id = {c: i for i, c in enumerate(all_captions())}
        self.rng = np.random.default_rng(seed)

    def sample(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        frames = np.zeros((n, FRAMES_PER_CLIP), np.int64)
        caps = np.zeros(n, np.int64)
        for j in range(n):
            two = self.rng.random() < 0.5
            cls = self.rng.choice(10, size=2 if two else 1, replace=False)
            per = [FRAMES_PER_CLIP // len(cls)] * len(cls)
            frames[j] = np.concatenate(
                [self.rng.choice(self.by_class[c], size=k) for c, k in zip(cls, per, strict=True)]
            )
            words = " and ".join(self.rng.choice(CLASS_WORDS[c]) for c in cls)
            caps[j] = self.caption_id[self.rng.choice(TEMPLATES).format(words)]
        return frames, caps
