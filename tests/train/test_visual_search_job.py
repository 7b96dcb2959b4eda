"""The real Ray Train job on a small slice of Fashion-MNIST: trains, checkpoints, resumes,
indexes and writes an artifact the app can serve."""

from __future__ import annotations

import re

import pyarrow.parquet as pq
import pytest

from mlsd.artifacts import ArtifactStore
from tests.conftest import ROOT, fashion_mnist_or_none, write_photo_folder
from train.visual_search import parse_args, run
from train.visual_search_index import index_job

pytestmark = [pytest.mark.slow]


def test_train_resume_and_index(ray_session, tmp_path):
    if fashion_mnist_or_none() is None:
        pytest.skip("Fashion-MNIST not installed (make data)")

    common = [
        "--train-limit",
        "1024",
        "--batch-size",
        "128",
        "--max-steps-per-epoch",
        "2",
        "--width",
        "8",
        "--embed-dim",
        "16",
        "--no-fuse-pretrained",
        "--store",
        str(tmp_path / "store"),
        "--runs-dir",
        str(tmp_path / "runs"),
        "--run-name",
        "resumable",
        "--catalogue-limit",
        "300",
    ]
    first = run(parse_args([*common, "--epochs", "1", "--skip-index"]))
    assert first["final"]["epoch"] == 0 and first["final"]["steps"] == 2
    assert first["final"]["resumed_from_epoch"] == 0
    # same run name, more epochs: Ray Train hands the worker the last checkpoint, so the
    # second run trains epoch 1 only (not 0 and 1 again)
    second = run(parse_args([*common, "--epochs", "2", "--positives", "neighbours"]))
    assert second["final"]["epoch"] == 1
    assert second["final"]["resumed_from_epoch"] == 1
    assert second["final"]["epochs_this_run"] == 1
    art = ArtifactStore(tmp_path / "store").load("visual_search")
    m = art.manifest
    assert m["config"]["train"]["positives"] == "neighbours"
    assert m["metrics"]["index"]["size"] == 300
    assert m["metrics"]["onnx_max_abs_diff"] < 1e-3
    # 10 balanced classes: chance is P@10 = 0.1; even a barely trained CNN ranks same-class
    # images far above it, and an index/metadata mix-up falls back to chance
    assert m["metrics"]["catalogue_eval"]["P@10"] > 0.2
    if (ROOT / ".git").exists():
        assert re.fullmatch(r"[0-9a-f]{40}", m["git_commit"]), m["git_commit"]
    else:
        assert m["git_commit"] == "unknown"
    for f in (
        "encoder.pt",
        "encoder.onnx",
        "encoder.int8.onnx",
        "index.faiss",
        "catalogue.parquet",
    ):
        assert art.file(f).exists()


def test_your_own_photos_train_index_and_keep_their_ids(ray_session, tmp_path):
    """README's "Your own data" for visual search, small: a folder of real photos (JPEG, PNG,
    WebP, one unreadable) -> the photo job trains the head with Ray Train and indexes with
    Ray Data; re-indexing a changed folder keeps every photo's id."""

    photos = write_photo_folder(tmp_path / "photos")
    (photos / "broken.jpg").write_bytes(b"\xff\xd8 not a photo")
    store = str(tmp_path / "store")
    out = run(
        parse_args(
            [
                "--images",
                str(photos),
                "--epochs",
                "2",
                "--views",
                "2",
                "--image-size",
                "64",
                "--hidden-dim",
                "32",
                "--embed-dim",
                "16",
                "--store",
                store,
                "--runs-dir",
                str(tmp_path / "runs"),
            ]
        )
    )
    assert out["photos_trained_on"] == 12 and out["input"]["bad_rows"] == 1
    assert out["final"]["epoch"] == 1 and out["final"]["steps"] >= 1
    art = ArtifactStore(store).load("visual_search")
    m = art.manifest["metrics"]
    assert art.config["encoder"]["arch"] == "adapted" and art.config["encoder"]["in_channels"] == 3
    assert m["input"]["rows"] == 13 and m["input"]["bad_rows"] == 1
    assert m["index"]["size"] == 12 and "catalogue_eval" in m
    first = pq.read_table(art.file("catalogue.parquet")).to_pydict()
    ids = dict(zip(first["file"], first["image_id"], strict=True))
    (photos / "p0_0.jpg").unlink()
    (photos / "new.jpg").write_bytes((photos / "p1_0.jpg").read_bytes())
    again = index_job(["--images", str(photos), "--store", store])
    assert again["photos"] == 13 and again["input"]["bad_rows"] == 1
    table = pq.read_table(ArtifactStore(store).load("visual_search").file("catalogue.parquet"))
    now = dict(zip(table["file"].to_pylist(), table["image_id"].to_pylist(), strict=True))
    assert {f: now[f] for f in now if f != "new.jpg"} == {f: ids[f] for f in now if f in ids}
    assert now["new.jpg"] > max(ids.values())  # a new photo gets a new id, never an old one
