"""The harmful-content training job on Ray Train: trains, checkpoints, resumes, and folds the
review queue's human labels into the next model's training rows."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import pytest

from mlsd.artifacts import ArtifactStore
from mlsd.harmful_content import data as D
from mlsd.harmful_content import features as F
from mlsd.harmful_content import pipeline as P
from mlsd.harmful_content.artifact import load_bag, load_classifier
from mlsd.harmful_content.review import ReviewQueue
from mlsd.runtime import make_runner
from tests.conftest import new_store, write_photo_folder
from train.harmful_content import parse_args, run

pytestmark = [pytest.mark.slow, pytest.mark.data]


def test_job_trains_resumes_and_folds_in_reviews(ray_session, tmp_path):

    if not (D.DATA_ROOT / "davidson_hate_offensive").exists():
        pytest.skip("harmful-content data not under ../shared/data")

    q = ReviewQueue(new_store(tmp_path / "reviews.sqlite"))
    rid = q.enqueue(
        "p1",
        {"text": "a post a reviewer saw", "lang": "en"},
        {"hate": 0.6},
        ["hate"],
        "harmful_content/v0",
    )
    q.enqueue("p2", {"text": "still waiting"}, {"hate": 0.7}, ["hate"], "harmful_content/v0")
    q.submit(rid, {"hate": 1, "offensive": 1}, "reviewer-1")
    q.close()
    common = [
        "--limit",
        "150",
        "--hidden",
        "32",
        "--store",
        str(tmp_path / "store"),
        "--runs-dir",
        str(tmp_path / "runs"),
        "--cache",
        str(tmp_path / "cache"),
        "--reviews",
        str(tmp_path / "reviews.sqlite"),
        "--run-name",
        "hc",
    ]
    first = run(parse_args(common + ["--epochs", "1"]))
    assert first["reviewed_rows"] == 1  # the done review joined; the pending one did not
    again = run(parse_args(common + ["--epochs", "2"]))  # resumes at epoch 1
    art = ArtifactStore(tmp_path / "store").load("harmful_content")
    assert art.manifest["data"]["reviewed_rows"] == 1
    assert art.config["train"]["epochs"] == 2 and again["artifact"] != first["artifact"]
    model, cfg = load_classifier(art)
    bag = load_bag(art)
    assert bag is not None and bag.size == cfg.spec.ngram_buckets

    enc = F.artifact_encoder(art.config, num_threads=1)
    x = P.featurize([D.Post("you are all wonderful", "en", "t")], enc, bag, cfg.spec)
    p_torch = P.predict(model, x)
    p_onnx = make_runner("onnx", path=art.file("classifier.onnx"), device="cpu", num_threads=1).run(
        x
    )
    np.testing.assert_allclose(p_onnx, p_torch, atol=1e-5)
    assert p_torch.shape == (1, len(D.HEADS))


def test_job_trains_the_heads_of_your_own_posts_file(ray_session, tmp_path):
    """README's "Your own data" for harmful content: a posts CSV whose head columns are not
    the demo's (real Davidson tweets relabelled into two policy columns, one of them
    partially unknown; some posts with a real photo, one with a missing one) trains a model
    with exactly those heads and an image input; the bad rows are reported."""

    if not (D.DATA_ROOT / "davidson_hate_offensive").exists():
        pytest.skip("harmful-content data not under ../shared/data")

    write_photo_folder(tmp_path / "photos")  # real photos: some posts carry one
    photos = sorted(p.name for p in (tmp_path / "photos").glob("*.jpg"))
    rows = ["post_id,text,split,image,abuse,slur"]
    for split in ("train", "val"):
        for k, p in enumerate(D.davidson(split)[:120]):
            slur = "" if p.row % 3 else str(p.labels["hate"])  # unknown on 2 rows in 3
            text = p.text.replace('"', "'")
            image = f"photos/{photos[k % len(photos)]}" if k % 30 == 0 else ""
            image = "photos/missing.jpg" if k == 1 else image  # unreadable: text only
            rows.append(f'{p.row},"{text}",{split},{image},{p.labels["offensive"]},{slur}')
    rows.append("bad,a post,train,,2,0")  # not a label: counted, not trained on
    path = tmp_path / "posts.csv"
    path.write_text("\n".join(rows) + "\n")
    out = run(
        parse_args(
            [
                "--posts",
                str(path),
                "--hidden",
                "32",
                "--epochs",
                "1",
                "--store",
                str(tmp_path / "store"),
                "--reviews",
                "none",
                "--runs-dir",
                str(tmp_path / "runs"),
                "--cache",
                str(tmp_path / "cache"),
            ]
        )
    )
    art = ArtifactStore(tmp_path / "store").load("harmful_content")
    assert list(art.config["classifier"]["heads"]) == ["abuse", "slur"]
    assert art.config["classifier"]["spec"]["image_dim"] == 1280  # the posts' images train
    data = art.manifest["data"]
    assert data["rows"] == 120 and data["input"]["bad_rows"] == 1
    assert set(art.manifest["metrics"]["validation"]) >= {"abuse/und"}
    assert np.isfinite(out["best_val_mean_auroc"])


def test_the_job_runs_as_ray_job_submit_runs_it(tmp_path):
    """``python -m train.harmful_content``: the job's module is ``__main__`` there, and every
    object the training loop reaches must still be importable on Ray's workers (a cached
    reader defined in the job once broke this while every in-process test passed)."""

    if not (D.DATA_ROOT / "davidson_hate_offensive").exists():
        pytest.skip("harmful-content data not under ../shared/data")
    rows = ["post_id,text,split,abuse"]
    for split in ("train", "val"):
        rows += [
            f'{p.row},"{p.text.replace(chr(34), chr(39))}",{split},{p.labels["offensive"]}'
            for p in D.davidson(split)[:60]
        ]
    (tmp_path / "posts.csv").write_text("\n".join(rows) + "\n")
    ray_tmp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # Ray's socket paths must be short
    env = {**os.environ, "RAY_TMPDIR": ray_tmp, "RAY_ADDRESS": ""}
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "train.harmful_content",
            "--posts",
            str(tmp_path / "posts.csv"),
            "--hidden",
            "16",
            "--epochs",
            "1",
            "--num-cpus",
            "1",
            "--cpus-per-worker",
            "1",
            "--store",
            str(tmp_path / "store"),
            "--reviews",
            "none",
            "--runs-dir",
            str(tmp_path / "runs"),
            "--cache",
            str(tmp_path / "cache"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    shutil.rmtree(ray_tmp, ignore_errors=True)
    assert out.returncode == 0, out.stderr[-3000:]
    assert '"artifact": "harmful_content/' in out.stdout
