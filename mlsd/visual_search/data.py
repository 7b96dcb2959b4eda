"""Visual search on a user's own photos: the documented input format and its reader.

Format (README, "Your own data"): a folder, glob or fsspec URI (``s3://bucket/photos``) of
images (JPEG, PNG, WebP; any size, RGB or not), plus an optional ``labels.csv`` beside them
(``file,label``: the path relative to the folder and any label string) used only to evaluate
retrieval (P@10 by label), never to train. Training is self-supervised on the photos; the
click log (``--clicks``) stays the interaction signal of the demo.

Every bad input is named and counted (:class:`mlsd.data.sources.BadRows`): an undecodable
image by file, a labels row by file, row and column. Ids are stable across versions: a photo
keeps the id it had in the artifact it is re-indexed from (a deletion tombstone names an id).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import fsspec
import numpy as np

from mlsd.data.sources import (
    BadRows,
    list_files,
    read_table,
    relative_name,
    require_columns,
)
from mlsd.image import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_PIXELS,
    decode_image,
    encode_image,
    image_statistics,
)
from mlsd.visual_search.features import model_input
from mlsd.visual_search.model import EncoderConfig

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp")
KEEP_ORIGINAL_BYTES = 256 * 1024  # a stored photo up to this size is kept as uploaded
STORED_SIDE = 512  # else a JPEG / PNG of this longer side is what GET /images/{id} answers


@dataclass
class PhotoSource:
    """The photos of a catalogue: ``files`` (paths / URIs), ``names`` (relative to the
    source: what ``labels.csv`` says), ``labels`` (string or None) and the bad rows of the
    labels table (reported beside the photos' own, in the artifact's metrics)."""

    src: str
    files: list[str]
    names: list[str]
    labels: list[str | None]
    bad: BadRows = field(default_factory=BadRows)

    def __len__(self) -> int:
        return len(self.files)

    def label_codes(self) -> tuple[np.ndarray, list[str]] | None:
        """(N,) int label codes (-1 = unlabelled) and the label names; None if unlabelled."""
        names = sorted({v for v in self.labels if v is not None})
        if not names:
            return None
        code = {n: i for i, n in enumerate(names)}
        return np.array([code.get(v, -1) if v is not None else -1 for v in self.labels]), names


def read_photo_source(
    src: str,
    labels: str | None = "auto",
    label_column: str = "label",
    file_column: str = "file",
    subset: str | None = None,
    max_bad_fraction: float = 0.5,
) -> PhotoSource:
    """List a photo catalogue. ``labels``: a ``file,label`` CSV, "auto" (``labels.csv`` in
    the folder if there is one) or None. ``subset``: "train" / "val" / "test" keeps that part
    of :func:`holdout_split` (a held-out evaluation without moving files). A labels file
    whose rows are mostly bad fails here, before any photo is read."""
    files = list_files(src, IMAGE_EXTENSIONS)
    names = [relative_name(f, src) for f in files]
    table, bad = {}, BadRows()
    if labels == "auto":
        candidate = f"{src.rstrip('/')}/labels.csv"
        fs, path = fsspec.core.url_to_fs(candidate)
        labels = candidate if fs.exists(path) else None
    if labels is not None:
        table, bad = read_labels(labels, set(names), label_column, file_column)
        bad.check(labels, max_bad_fraction)  # a labels file for other photos: say so now
    if subset is not None:
        keep = [i for i, n in enumerate(names) if holdout_split(n) == subset]
        files, names = [files[i] for i in keep], [names[i] for i in keep]
    return PhotoSource(src, files, names, [table.get(n) for n in names], bad)


def read_labels(
    path: str, known: set[str], label_column: str = "label", file_column: str = "file"
) -> tuple[dict[str, str], BadRows]:
    """``file,label`` rows -> {file: label}. A missing column or an empty file is a
    :class:`DataError`; a row with the wrong number of fields, a file not in the catalogue,
    or a second row for a file is a bad row (named, counted); an empty label is unlabelled."""
    header, rows = read_table(path)
    require_columns(path, header, (file_column, label_column))
    out: dict[str, str] = {}
    bad = BadRows()
    for _, row, rec in bad.readable(rows, path):
        name, label = str(rec[file_column]).strip(), str(rec[label_column]).strip()
        where = f"{row}, column {file_column!r}"
        if name not in known:
            bad.add(f"unknown file {name[:200]!r} (not among the photos)", where)
        elif name in out:
            bad.add(f"duplicate row for {name[:200]!r} (the first is kept)", where)
        elif label:
            out[name] = label
    return out, bad


def holdout_split(name: str, val: float = 0.2, test: float = 0.2) -> str:
    """ "train" / "val" / "test" for a photo by a hash of its name: the same photo always
    lands in the same part, whatever else the folder holds."""
    u = zlib.crc32(name.encode()) % 1000 / 1000
    return "test" if u >= 1 - test else "val" if u >= 1 - test - val else "train"


def assign_ids(names: list[str], previous: dict[str, int] | None = None) -> np.ndarray:
    """(N,) catalogue ids: a name the previous version had keeps its id; new ones follow the
    largest id used, in order."""
    previous = previous or {}
    nxt = max(previous.values(), default=-1) + 1
    out = np.empty(len(names), np.int64)
    for i, n in enumerate(names):
        if n in previous:
            out[i] = previous[n]
        else:
            out[i], nxt = nxt, nxt + 1
    return out


def read_bytes(path: str, max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
    """One file's bytes (path or URI), at most ``max_bytes`` (+1 to tell it is over)."""
    with fsspec.open(path, "rb") as f:
        return f.read(max_bytes + 1)


@dataclass
class DecodedPhoto:
    x: np.ndarray  # (C, S, S) float32 in [0, 1], the encoder's input
    stored: bytes  # what GET /images/{id} answers: the original, or a STORED_SIDE copy
    stats: dict[str, float]  # image_statistics of x (drift features)


def decode_photo(
    data: bytes,
    cfg: EncoderConfig,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> DecodedPhoto:
    """One photo's bytes -> the model input as the artifact's config says, the bytes to keep
    and its drift features; :class:`mlsd.image.InvalidImage` says why a file is unusable."""
    img = decode_image(data, max_bytes, max_pixels, target=max(cfg.image_size, STORED_SIDE))
    x, flipped = model_input(img, cfg)
    if len(data) <= KEEP_ORIGINAL_BYTES:
        stored = data
    else:
        stored, _ = encode_image(img, STORED_SIDE)
    stats = {k: float(v[0]) for k, v in image_statistics(x).items()}
    stats["flipped"] = float(flipped)
    return DecodedPhoto(x, stored, stats)
