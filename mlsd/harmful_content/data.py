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

A platform's own posts come in one documented format (:func:`read_posts`; README, "Your own
data"): CSV or JSONL with ``post_id``, ``text``, optional ``lang``, ``image`` (a path or URI)
and ``split``, and one column per head holding 1 / 0 / empty (unknown). The heads are the
file's columns, not a fixed list; Davidson and MLMA are adapters to it (:func:`write_posts`).

Splits: Davidson stratified 80/20 by class, ``train_test_split(random_state=42)`` over the
CSV's row order, validation a stratified tenth of the 80 %; MLMA per language the same,
stratified by ``hostile``.
"""

from __future__ import annotations

import csv
import functools
import os
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import fsspec
import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from mlsd.data.sources import BadRows, DataError, read_table, require_columns

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

    path = data_root(root) / "davidson_hate_offensive" / "labeled_data.csv"
    if not path.exists():
        raise DataNotFound(f"{path} not found")
    df = pd.read_csv(path)
    cls = df["class"].to_numpy()
    out = []
    for i in _split(len(df), cls, split):
        c = int(cls[i])
        out.append(
            Post(
                str(df["tweet"].iat[i]),
                "en",
                "davidson",
                {"hate": int(c == 0), "offensive": int(c in (0, 1))},
                int(i),
                {"class": c, "votes": int(df["count"].iat[i])},
            )
        )
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

    if lang not in LANGS:
        raise ValueError(f"MLMA languages are {LANGS}, not {lang!r}")
    path = data_root(root) / "mlma_hate_speech" / f"{lang}_dataset.csv"
    if not path.exists():
        raise DataNotFound(f"{path} not found")
    df = pd.read_csv(path)
    hostile = (df["sentiment"] != "normal").to_numpy().astype(int)
    out = []
    for i in _split(len(df), hostile, split):
        out.append(
            Post(
                str(df["tweet"].iat[i]),
                lang,
                "mlma",
                mlma_labels(df["sentiment"].iat[i]),
                int(i),
                {"sentiment": str(df["sentiment"].iat[i])},
            )
        )
    return out


def all_posts(split: str = "train", langs=LANGS, root: str | Path | None = None) -> list[Post]:
    """Every data set's rows of ``split``: the multi-task training set (masked heads)."""
    posts = davidson(split, root) if "en" in langs else []
    for lang in langs:
        posts += mlma(lang, split, root)
    return posts


def demo_posts(root: str | Path | None = None) -> list[Post]:
    """Every post of the demo sets, each with its fixed split in ``meta["split"]``: what
    :func:`write_posts` writes out as the demo's posts file."""
    posts = []
    for split in SPLITS:
        for p in all_posts(split, root=root):
            p.meta["split"] = split
            posts.append(p)
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


# --- a platform's own posts: the documented format --------------------------------------

POST_COLUMNS = ("post_id", "text", "lang", "image", "split")  # the rest are heads
LABEL_VALUES = {"1": 1, "0": 0, "": None, "1.0": 1, "0.0": 0, "true": 1, "false": 0}
MAX_TEXT_CHARS = 20_000
MAX_POSTS_BYTES = 8 << 30  # 8 GiB: more posts than this: sample or shard them
HEAD_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")


def post_split(post_id: str, val: float = 0.1, test: float = 0.1) -> str:
    """ "train" / "val" / "test" by a hash of the post id (a file without a split column)."""
    u = zlib.crc32(str(post_id).encode()) % 1000 / 1000
    return "test" if u >= 1 - test else "val" if u >= 1 - test - val else "train"


def read_posts(
    path: str, heads: list[str] | None = None, max_bad_fraction: float = 0.5
) -> tuple[list[Post], tuple[str, ...], BadRows]:
    """A platform's labelled posts -> (posts, heads, bad rows). ``heads``: the head columns
    to train (default: every column that is not one of :data:`POST_COLUMNS`). A missing
    ``post_id`` / ``text`` column, no head column, or a file that is mostly bad is a
    :class:`DataError`; a bad row (wrong field count, empty or over-long text, a label that
    is not 1 / 0 / empty, a post id seen before, a bad split) is named and counted."""
    columns, rows = read_table(path, max_bytes=MAX_POSTS_BYTES)
    require_columns(path, columns, ("post_id", "text"))
    found = [c for c in columns if c not in POST_COLUMNS]
    heads = list(heads) if heads else found
    for h in heads:
        if h not in columns:
            raise DataError(f"{path}: no head column {h!r} (head columns: {found})")
        if not HEAD_NAME.fullmatch(h):
            raise DataError(f"{path}: head column {h!r}: lower-case letters, digits, '_'")
    if not heads:
        raise DataError(f"{path}: no head column (a column per policy, 1 / 0 / empty)")
    base = path.rsplit("/", 1)[0] if "://" in path else os.path.dirname(os.path.abspath(path))
    bad, seen, posts = BadRows(), set(), []
    for n, where, rec in bad.readable(rows, path):
        post_id = str(rec.get("post_id") if rec.get("post_id") is not None else "").strip()
        text = rec.get("text")
        if not post_id:
            bad.add("empty post_id", f"{where}, column 'post_id'")
            continue
        if post_id in seen:
            bad.add(f"duplicate post_id {post_id[:100]!r}", f"{where}, column 'post_id'")
            continue
        if not isinstance(text, str) or not text.strip():
            bad.add("empty text", f"{where}, column 'text'")
            continue
        if len(text) > MAX_TEXT_CHARS:
            bad.add(f"text over {MAX_TEXT_CHARS} characters", f"{where}, column 'text'")
            continue
        labels, why = {}, ""
        for h in heads:
            raw = rec.get(h)
            value = LABEL_VALUES.get(str("" if raw is None else raw).strip().lower(), "bad")
            if value == "bad":
                why = f"label {str(raw)[:20]!r} is not 1, 0 or empty; column {h!r}"
                break
            if value is not None:
                labels[h] = value
        if why:
            bad.add(why, where)
            continue
        split = str(rec.get("split") or "").strip() or post_split(post_id)
        if split not in SPLITS:
            bad.add(f"split {split[:20]!r} is not train, val or test", f"{where}, column 'split'")
            continue
        seen.add(post_id)
        lang = str(rec.get("lang") or "").strip() or "und"
        meta = {"post_id": post_id, "split": split}
        if rec.get("image"):  # a path relative to the posts file, or a URI
            image = str(rec["image"]).strip()
            meta["image"] = image if "://" in image or image.startswith("/") else f"{base}/{image}"
        posts.append(Post(text, lang, "posts", labels, n, meta))
    bad.check(path, max_bad_fraction)
    return posts, tuple(heads), bad


@functools.lru_cache(maxsize=2)
def read_posts_once(path: str, heads: str | None, max_bad_fraction: float = 0.5):
    """:func:`read_posts` once per process (a job reads the heads, each split and the report
    from one file). Here, not in the job's module: a job run as ``python -m`` is ``__main__``,
    which Ray's workers cannot import a cached function from. ``heads``: comma-separated."""
    return read_posts(path, heads.split(",") if heads else None, max_bad_fraction)


def write_posts(posts: list[Post], path: str | Path, heads=HEADS, split: str | None = None) -> int:
    """Posts -> the documented CSV (how Davidson and MLMA become adapters to the format):
    ``post_id`` = source:row, the post's ``split`` if given, one column per head."""
    with fsspec.open(str(path), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["post_id", "text", "lang", "split", *heads])
        for p in posts:
            cells = ["" if p.labels.get(h) is None else str(p.labels[h]) for h in heads]
            pid = p.meta.get("post_id") or f"{p.source}:{p.lang}:{p.row}"
            w.writerow([pid, p.text, p.lang, split or p.meta.get("split", ""), *cells])
    return len(posts)


def posts_of(posts: list[Post], split: str) -> list[Post]:
    return [p for p in posts if p.meta.get("split") == split]
