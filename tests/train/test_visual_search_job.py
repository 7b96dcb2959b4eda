"""The real Ray Train job on a small slice of Fashion-MNIST: trains, checkpoints, resumes,
indexes and writes an artifact the app can serve."""

from __future__ import annotations

import re

import pytest

from tests.conftest import ROOT, fashion_mnist_or_none

pytestmark = [pytest.mark.slow]


def test_train_resume_and_index(ray_session, tmp_path):
    if fashion_mnist_or_none() is None:
        pytest.skip("Fashion-MNIST not installed (make data)")
    from mlsd.artifacts import ArtifactStore
    from train.visual_search import parse_args, run

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
