"""The blurring jobs on Ray: a short detector training run (resumable), and the batch blur."""

from __future__ import annotations

import json
import shutil

import av
import numpy as np
import pytest
import torch

from mlsd.artifacts import ArtifactStore
from mlsd.blurring import data as D
from mlsd.blurring.artifact import load_detector
from mlsd.blurring.backends import PACKAGED_UNION, build_backend
from mlsd.video import write_mp4
from train import blur_batch, blurring, blurring_centerface

pytestmark = [pytest.mark.slow, pytest.mark.data]


def _need_data():

    try:
        D.faces("test")
        D.plates("train")
    except D.DataNotFound:
        pytest.skip("blurring data not under ../shared/data")


def test_training_runs_checkpoints_and_resumes(ray_session, tmp_path):
    _need_data()

    common = [
        "--family",
        "fcos",
        "--limit",
        "4",
        "--max-steps-per-epoch",
        "2",
        "--crop",
        "256",
        "--fpn-channels",
        "32",
        "--calibration-photos",
        "2",
        "--store",
        str(tmp_path / "store"),
        "--runs-dir",
        str(tmp_path / "runs"),
        "--run-name",
        "tiny",
    ]
    first = blurring.run(blurring.parse_args(common + ["--epochs", "1"]))
    assert first["final"]["epoch"] == 0 and np.isfinite(first["final"]["loss"])
    again = blurring.run(
        blurring.parse_args(common + ["--epochs", "2"])
    )  # same run name: resumes at epoch 1
    assert again["final"]["epoch"] == 1 and again["final"]["resumed_from_epoch"] == 1
    art = ArtifactStore(tmp_path / "store").load("blurring_fcos")
    model, cfg = load_detector(art)
    assert cfg.family == "fcos" and art.manifest["metrics"]["epoch"] == 1
    # the graphs the CPU backends serve, int8 calibrated on its training photos
    assert {"detector.onnx", "detector.int8.onnx"} <= set(art.manifest["files"])
    # the thresholds it is served at ("threshold: validated"), chosen on validation photos
    assert set(art.config["thresholds"]) == {"face", "plate"}
    assert art.manifest["data"]["validation"].startswith("4 face photos, 4 plate photos")
    # an artifact re-exported and validated as a new version, its weights and record kept
    out = blurring.run(
        blurring.parse_args(common + ["--from-artifact", f"blurring_fcos@{art.version}"])
    )
    again_art = ArtifactStore(tmp_path / "store").load("blurring_fcos")
    assert out["thresholds"] == art.config["thresholds"]  # printed at the end of the job
    assert again_art.version != art.version
    assert again_art.config["train"]["exported_from"] == f"blurring_fcos/{art.version}"
    assert again_art.config["thresholds"] == art.config["thresholds"]
    weights = load_detector(again_art)[0].state_dict()
    assert all(torch.equal(v, weights[k]) for k, v in model.state_dict().items())
    # the offline variant: crops made once, stored, trained from; one region's plates alone,
    # synthetic plates painted over them (leave one region out: bench.blurring_regions)
    off = common[:-1] + ["offline", "--epochs", "1", "--augment", "offline"]
    off += ["--offline-copies", "2", "--offline-dir", str(tmp_path / "crops"), "--name", "off"]
    off += ["--no-faces", "--plate-regions", "eu", "--synthetic-plates", "0.5"]
    blurring.run(blurring.parse_args(off))
    manifest = ArtifactStore(tmp_path / "store").load("off").manifest
    metrics, data = manifest["metrics"], manifest["data"]
    assert metrics["offline_crops"] == 8 and metrics["offline_bytes"] > 0  # 4 plates x 2
    assert (
        data["faces"].endswith("(train split, 0 photos)")
        and "openalpr_plates eu " in data["plates"]
    )
    assert data["synthetic_plates"].startswith("synthetic: p=0.5")


@pytest.mark.parametrize("stages", ["fused", "split"])
def test_batch_blur_skips_broken_files_and_finished_outputs(ray_session, tmp_path, stages):
    _need_data()

    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    faces = D.faces("test")[:2]
    for e in faces:
        shutil.copy(e.path, src / e.path.name)
    (src / "sub" / "broken.jpg").write_bytes(b"not an image")
    write_mp4(src / "clip.mp4", [D.load_rgb(faces[0].path)[:128, :128]] * 6, fps=5)

    args = blur_batch.parse_args(
        [
            "--input",
            str(src),
            "--output",
            str(tmp_path / "out"),
            "--stages",
            stages,
            "--detector",
            json.dumps(PACKAGED_UNION),
        ]
    )
    out = blur_batch.run(args)
    assert out["written"] == 3 and out["boxes"] > 0
    assert [f["input"].endswith("broken.jpg") for f in out["failed"]] == [True]
    assert "not an image" in out["failed"][0]["reason"]
    written = sorted(
        p.relative_to(tmp_path / "out").as_posix()
        for p in (tmp_path / "out").rglob("*")
        if p.is_file()
    )
    assert written == sorted([f"{e.path.stem}.jpg" for e in faces] + ["clip.mp4"])

    with av.open(str(tmp_path / "out" / "clip.mp4")) as c:
        assert c.streams.video[0].frames == 6  # re-encoded, every frame
    again = blur_batch.run(args)
    assert again["written"] == 0 and again["skipped_existing"] == 3


def test_training_from_your_own_coco_boxes(ray_session, tmp_path):
    """README's "Your own data" for blurring: real training photos written out as a COCO
    file (faces and plates under the user's class names, plus a class the map leaves out),
    trained through ``--boxes``; the artifact says what it was trained on."""
    _need_data()

    photos = D.faces("train")[:3] + D.plates("train")[:3]
    cats = [{"id": 1, "name": "person-face"}, {"id": 2, "name": "lp"}, {"id": 3, "name": "car"}]
    images, anns = [], []
    for i, e in enumerate(photos):
        images.append({"id": i, "file_name": str(e.path), "width": e.width, "height": e.height})
        for (x1, y1, x2, y2), lab in zip(e.boxes.tolist(), e.labels.tolist(), strict=True):
            anns.append(
                {
                    "image_id": i,
                    "category_id": 1 if lab == D.FACE else 2,
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                }
            )
        anns.append({"image_id": i, "category_id": 3, "bbox": [0, 0, 10, 10]})
    coco = tmp_path / "boxes.json"
    coco.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    out = blurring.run(
        blurring.parse_args(
            [
                "--boxes",
                str(coco),
                "--boxes-images",
                "/",
                "--class-map",
                "person-face=face,lp=plate",
                "--epochs",
                "1",
                "--max-steps-per-epoch",
                "1",
                "--crop",
                "256",
                "--fpn-channels",
                "32",
                "--store",
                str(tmp_path / "store"),
                "--runs-dir",
                str(tmp_path / "runs"),
            ]
        )
    )
    assert np.isfinite(out["final"]["loss"])
    data = ArtifactStore(tmp_path / "store").load("blurring_fcos").manifest["data"]
    n_faces = sum(len(e.boxes) for e in photos[:3])
    assert data["boxes_by_class"] == {"face": n_faces, "plate": 3}
    assert data["input"]["bad_rows"] == 0
    assert data["input"]["left_out"] == {"class 'car' (not in the class map)": 6}


def test_centerface_int8_job_calibrates_on_your_photos_and_records_its_cost(tmp_path):
    """train.blurring_centerface: a folder of your own photos (no boxes) calibrates the int8
    graph, an unreadable file is skipped and listed, the artifact records fp32 vs int8 on
    validation faces and serves as a detector member; photos without faces (plates only)
    calibrate the face activations too narrowly, and the job refuses to write that graph."""
    _need_data()
    photos = tmp_path / "photos"
    photos.mkdir()
    for e in D.faces("train")[:4]:
        shutil.copy(e.path, photos / e.path.name)
    (photos / "zz_broken.jpg").write_bytes(b"not an image")
    store = tmp_path / "store"

    def job(folder, *more):
        flags = ["--store", str(store), "--photos", str(folder), "--check-photos", "8"]
        return blurring_centerface.run(blurring_centerface.parse_args(flags + list(more)))

    out = job(photos, "--calibration-photos", "5")
    art = ArtifactStore(store).load("centerface_int8")
    data, metrics = art.manifest["data"], art.manifest["metrics"]
    assert out["artifact"] == f"centerface_int8/{art.version}"
    assert data["photos"].startswith(str(photos)) and "(4 of 5)" in data["photos"]
    assert [b["file"].endswith("zz_broken.jpg") for b in data["unreadable"]] == [True]
    assert metrics["check_photos"] == 8
    for k in ("val_ap50", "val_coverage", "images_per_s"):
        assert metrics[f"{k}_int8"] > 0 and metrics[f"{k}_fp32"] > 0
    int8 = build_backend({"kind": "centerface", "backend": "onnx-int8"}, ArtifactStore(store))
    assert len(int8(D.load_rgb(D.faces("test")[0].path))) > 0

    plates = tmp_path / "plates"
    plates.mkdir()
    for e in D.plates("train")[:2]:
        shutil.copy(e.path, plates / e.path.name)
    with pytest.raises(ValueError, match="calibrate on photos with faces"):
        job(plates)
    assert ArtifactStore(store).load("centerface_int8").version == art.version  # unchanged
    empty = tmp_path / "none"
    empty.mkdir()
    (empty / "a.jpg").write_bytes(b"x")
    with pytest.raises(ValueError, match="no readable photo"):
        job(empty)
