import gzip
import struct

import numpy as np
import pytest

from mlsd.data import fashion_mnist as fm


def _write_idx(path, arr: np.ndarray, gz: bool):
    header = struct.pack(">HBB", 0, 0x08, arr.ndim) + struct.pack(">" + "I" * arr.ndim, *arr.shape)
    data = header + arr.astype(np.uint8).tobytes()
    (gzip.open if gz else open)(path, "wb").write(data)


@pytest.mark.parametrize("gz", [True, False])
def test_reads_idx_files(tmp_path, gz):
    rng = np.random.default_rng(0)
    for split, (img_name, lbl_name) in fm.FILES.items():
        n = 7 if split == "test" else 11
        suffix = ".gz" if gz else ""
        _write_idx(tmp_path / f"{img_name}{suffix}", rng.integers(0, 255, (n, 28, 28)), gz)
        _write_idx(tmp_path / f"{lbl_name}{suffix}", rng.integers(0, 10, n), gz)
    test = fm.load("test", tmp_path)
    assert test.images.shape == (7, 28, 28) and test.labels.shape == (7,)
    assert fm.load("train", tmp_path).images.shape == (11, 28, 28)
    with pytest.raises(ValueError):
        fm.load("validation", tmp_path)


def test_truncated_file_is_reported(tmp_path):
    for img_name, lbl_name in fm.FILES.values():
        _write_idx(tmp_path / img_name, np.zeros((3, 28, 28)), False)
        _write_idx(tmp_path / lbl_name, np.zeros(3), False)
    name = fm.FILES["test"][0]
    data = (tmp_path / name).read_bytes()
    (tmp_path / name).write_bytes(data[:-100])
    with pytest.raises(ValueError, match="truncated"):
        fm.load("test", tmp_path)


def test_missing_dataset_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.setattr(fm, "DEBIAN_DIR", tmp_path / "nope")
    monkeypatch.setattr(fm, "LOCAL_DIR", tmp_path / "nope2")
    monkeypatch.delenv("FASHION_MNIST_DIR", raising=False)
    with pytest.raises(fm.DatasetNotFound, match="dataset-fashion-mnist"):
        fm.load("test", tmp_path / "empty")


def test_real_set_when_installed():
    try:
        test = fm.load("test")
    except fm.DatasetNotFound:
        pytest.skip("Fashion-MNIST not installed (make data)")
    assert test.images.shape == (10000, 28, 28)
    assert np.bincount(test.labels).tolist() == [1000] * 10
