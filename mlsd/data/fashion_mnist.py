"""Fashion-MNIST reader (idx files, gzipped or not).

Looks in the given folder, then in ``$FASHION_MNIST_DIR``, then where Debian's
``dataset-fashion-mnist`` package installs it. Users with internet can call
:func:`download` to fetch the official files first.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import struct
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
LOCAL_DIR = Path("data/fashion-mnist")  # where `make data` downloads it without Debian
# the dataset's own repository, over HTTPS; every file is checked against SHA256 below
OFFICIAL_URL = (
    "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/"
)
# SHA-256 of each file's *decompressed* bytes (the gzip wrapper differs between mirrors;
# the data does not): measured on Debian's dataset-fashion-mnist package
SHA256 = {
    "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)


class DatasetNotFound(FileNotFoundError):
    """The data set's files are not where we looked (the message lists where)."""


@dataclass(frozen=True)
class Split:
    images: np.ndarray  # (N, 28, 28) uint8
    labels: np.ndarray  # (N,) int64


def _candidates(root: str | os.PathLike | None) -> list[Path]:
    out = []
    if root:
        out.append(Path(root))
    if os.environ.get("FASHION_MNIST_DIR"):
        out.append(Path(os.environ["FASHION_MNIST_DIR"]))
    out.append(DEBIAN_DIR)
    out.append(LOCAL_DIR.resolve())
    return out


def find_root(root: str | os.PathLike | None = None) -> Path:
    """First folder holding the four idx files (plain or .gz)."""
    tried = _candidates(root)
    for folder in tried:
        if all(_resolve(folder, n) is not None for pair in FILES.values() for n in pair):
            return folder
    raise DatasetNotFound(
        "Fashion-MNIST not found in "
        + ", ".join(str(p) for p in tried)
        + " (apt-get install dataset-fashion-mnist, or mlsd.data.fashion_mnist.download(dir))"
    )


def _resolve(folder: Path, name: str) -> Path | None:
    for cand in (folder / name, folder / f"{name}.gz"):
        if cand.exists():
            return cand
    return None


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte idx file")
    shape = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if arr.size != int(np.prod(shape)):
        raise ValueError(f"{path}: truncated ({arr.size} of {int(np.prod(shape))} values)")
    return arr.reshape(shape)


def load(split: str = "test", root: str | os.PathLike | None = None) -> Split:
    """Load ``train`` (60k) or ``test`` (10k) images and labels."""
    if split not in FILES:
        raise ValueError(f"split must be one of {sorted(FILES)}, got {split!r}")
    folder = find_root(root)
    img_name, lbl_name = FILES[split]
    images = _read_idx(_resolve(folder, img_name))
    labels = _read_idx(_resolve(folder, lbl_name)).astype(np.int64)
    if len(images) != len(labels):
        raise ValueError(f"{folder}: {len(images)} images but {len(labels)} labels")
    return Split(images=images, labels=labels)


def verify(path: Path, name: str) -> None:
    """Raise ValueError unless the gzipped file's content has the published SHA-256."""

    h = hashlib.sha256()
    with gzip.open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    if h.hexdigest() != SHA256[name]:
        raise ValueError(f"{path}: SHA-256 {h.hexdigest()} is not Fashion-MNIST's {name}")


def download(dest: str | os.PathLike, base_url: str = OFFICIAL_URL) -> Path:
    """Fetch the official gzipped idx files over HTTPS (needs internet); each is checked
    against its SHA-256 before it is kept (a bad one is deleted and the call fails)."""
    if not base_url.startswith("https://"):
        raise ValueError(f"downloads must use HTTPS, got {base_url}")
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for pair in FILES.values():
        for name in pair:
            target = dest / f"{name}.gz"
            if target.exists():
                verify(target, name)
                continue
            partial = target.with_suffix(".gz.part")
            urllib.request.urlretrieve(base_url + f"{name}.gz", partial)
            try:
                verify(partial, name)
            except (ValueError, OSError):
                partial.unlink(missing_ok=True)
                raise
            partial.replace(target)
    return dest
