"""The harmful-content data sets, each read by its own reader into one row format, with the
fixed splits ``../shared/ANCHORS.md`` documents (so our figures sit beside the peers').

A row is a post: ``text``, ``lang``, ``source`` and one label per head it carries (0 / 1);
heads a data set does not annotate are missing (masked out of that head's loss, never read
as 0). Heads, from the data we have:

- Davidson et al. 2017 (English tweets, 3 annotators' majority class): ``hate`` (class 0) and
  ``offensive`` (offensive or hate: class 0 or 1 - 83 % of the tweets);
- MLMA (Ousidhoum et al. 2019; English, French, Arabic; hostility type is multi-label):
  ``hostile`` (sentiment other than ``normal``) and one head per hostility type present
  (``abusive``, ``hateful``, ``mlma_offensive``, ``disrespectful``, ``fearful``).

The book's violence, nudity and self-harm heads have no offline data and are not built.

Splits: Davidson stratified 80/20 by class, ``train_test_split(random_state=42)`` over the
CSV's row order, validation a stratified tenth of the 80 %; MLMA per language the same,
stratified by ``hostile``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

DATA_ROOT = Path(__file__).resolve().parents[3] / "shared" / "data"
SPLITS = ("train", "val", "test")
LANGS = ("en", "fr", "ar")
MLMA_TYPES = ("abusive", "hateful", "offensive", "disrespectful", "fearful")
DAVIDSON_HEADS = ("hate", "offensive")
MLMA_HEADS = ("hostile", "abusive", "hateful", "mlma_offensive", "disrespectful", "fearful")
HEADS = DAVIDSON_HEADS + MLMA_HEADS
SEED = 42


class DataNotFound(FileNotFoundError):
    pass


@dataclass
class Post:
    text: str
    lang: str
    source: str  # "davidson" | "mlma"
    labels: dict[str, int] = field(default_factory=dict)  # head -> 0 / 1 (absent: unknown)
    row: int = -1  # row in its CSV (stable id)
    meta: dict = field(default_factory=dict)


def data_root(root: str | Path | None = None) -> Path:
    return Path(root) if root else DATA_ROOT


def _split(n: int, strata: np.ndarray, split: str) -> np.ndarray:
    """Row indices of ``split``: 80/20 stratified (random_state 42), val a tenth of the 80."""
    from sklearn.model_selection import train_test_split

    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
    idx = np.arange(n)
    rest, test = train_test_split(idx, test_size=0.2, stratify=strata, random_state=SEED)
    if split == "test":
        return test
    train, val = train_test_split(rest, test_size=0.1, stratify=strata[rest], random_state=SEED)
    return train if split == "train" else val


def davidson(split: str = "train", root: str | Path | None = None) -> list[Post]:
    """Davidson's ``labeled_data.csv`` (24,783 tweets), heads ``hate`` and ``offensive``."""
    import pandas as pd

    path = data_root(root) / "davidson_hate_offensive" / "labeled_data.csv"
    if not path.exists():
        raise DataNotFound(f"{path} not found")
    df = pd.read_csv(path)
    cls = df["class"].to_numpy()
    out = []
    for i in _split(len(df), cls, split):
        c = int(cls[i])
        out.append(Post(str(df["tweet"].iat[i]), "en", "davidson",
                        {"hate": int(c == 0), "offensive": int(c in (0, 1))}, int(i),
                        {"class": c, "votes": int(df["count"].iat[i])}))  # fmt: skip
    return out


def mlma_labels(sentiment: str) -> dict[str, int]:
    """MLMA's '_'-joined hostility types -> our heads (``hostile``: anything but 'normal')."""
    types = set(str(sentiment).split("_"))
    labels = {"hostile": int(str(sentiment) != "normal")}
    for t in MLMA_TYPES:
        labels["mlma_offensive" if t == "offensive" else t] = int(t in types)
    return labels


def mlma(lang: str = "en", split: str = "train", root: str | Path | None = None) -> list[Post]:
    """One MLMA language (en 5,647 / fr 4,014 / ar 3,353 tweets), the MLMA heads."""
    import pandas as pd

    if lang not in LANGS:
        raise ValueError(f"MLMA languages are {LANGS}, not {lang!r}")
    path = data_root(root) / "mlma_hate_speech" / f"{lang}_dataset.csv"
    if not path.exists():
        raise DataNotFound(f"{path} not found")
    df = pd.read_csv(path)
    hostile = (df["sentiment"] != "normal").to_numpy().astype(int)
    out = []
    for i in _split(len(df), hostile, split):
        out.append(Post(str(df["tweet"].iat[i]), lang, "mlma", mlma_labels(df["sentiment"].iat[i]),
                        int(i), {"sentiment": str(df["sentiment"].iat[i])}))  # fmt: skip
    return out


def all_posts(split: str = "train", langs=LANGS, root: str | Path | None = None) -> list[Post]:
    """Every data set's rows of ``split``: the multi-task training set (masked heads)."""
    posts = davidson(split, root) if "en" in langs else []
    for lang in langs:
        posts += mlma(lang, split, root)
    return posts


def label_matrix(posts: list[Post], heads=HEADS) -> tuple[np.ndarray, np.ndarray]:
    """(N, H) float32 labels and (N, H) bool mask: which heads each post carries."""
    y = np.zeros((len(posts), len(heads)), np.float32)
    m = np.zeros((len(posts), len(heads)), bool)
    for i, p in enumerate(posts):
        for j, h in enumerate(heads):
            if h in p.labels:
                y[i, j], m[i, j] = p.labels[h], True
    return y, m
