"""Each detector artifact carries the thresholds it was validated at, and "threshold:
validated" serves those numbers (a 2-epoch demo and a 16-epoch detector score on different
scales: one fixed threshold suits one of them)."""

from __future__ import annotations

import numpy as np
import pytest

from apps.blurring import BlurringArgs
from mlsd.artifacts import ArtifactError, ArtifactStore
from mlsd.blurring.artifact import VALIDATED, pin_members
from mlsd.blurring.backends import SERVED_MEMBERS, build_backend
from mlsd.blurring.data import FACE, PLATE
from mlsd.blurring.evaluation import FP_BOUNDS, validated_thresholds
from mlsd.blurring.pipeline import Detections

OURS = {"kind": "torch", "artifact": "blurring_fcos", "backend": "onnx-int8"}


def _photo_with(face_fp_scores, plate_fp_scores):
    """One validation photo (one face, one plate) and the detections a detector makes there:
    both found at 0.9, plus false positives (boxes on empty ground) at the given scores."""
    gt = np.array([[10, 10, 40, 50], [100, 100, 160, 115]], np.float32)
    fp = [[200 + 12 * i, 5, 208 + 12 * i, 13] for i in range(8)]
    boxes = [gt[0], gt[1]] + fp[: len(face_fp_scores) + len(plate_fp_scores)]
    scores = [0.9, 0.9, *face_fp_scores, *plate_fp_scores]
    labels = [FACE, PLATE] + [FACE] * len(face_fp_scores) + [PLATE] * len(plate_fp_scores)
    det = Detections(
        np.asarray(boxes, np.float32), np.asarray(scores, np.float32), np.asarray(labels)
    )
    image = np.zeros((240, 320, 3), np.uint8)
    return (image, gt, np.array([FACE, PLATE], np.int64)), det


def test_each_class_gets_the_lowest_threshold_within_its_own_fp_bound():
    # 6 face FPs: FP/image <= 5 first at 0.15 (the 0.12 one cut); 2 plate FPs: <= 1 at 0.35
    example, det = _photo_with([0.12, 0.22, 0.32, 0.42, 0.52, 0.62], [0.33, 0.47])
    thresholds, stats = validated_thresholds(lambda image: det, [example])
    assert FP_BOUNDS == {"face": 5.0, "plate": 1.0}
    assert thresholds == {"face": 0.15, "plate": 0.35}
    assert stats["val_face_fp_per_image"] == 5 and stats["val_plate_fp_per_image"] == 1
    assert stats["val_face_coverage"] == 1.0 and stats["val_plate_coverage"] == 1.0
    # per class, each on its own photos (the demo's face and plate sets): the same choice
    per_class = validated_thresholds(lambda image: det, {"face": [example], "plate": [example]})
    assert per_class[0] == thresholds
    # a class with no ground truth in validation gets no threshold (it is not blurred by it)
    faces_only = (example[0], example[1][:1], example[2][:1])
    assert set(validated_thresholds(lambda image: det, [faces_only])[0]) == {"face"}
    assert set(validated_thresholds(lambda image: det, {"face": [example]})[0]) == {"face"}


def test_served_members_take_the_numbers_their_artifact_was_validated_at(blur_store):
    store = ArtifactStore(blur_store)
    art = store.load("blurring_fcos")
    chosen = art.config["thresholds"]
    assert set(chosen) == {"face", "plate"} and "val_face_coverage" in art.manifest["metrics"]
    assert SERVED_MEMBERS[0]["threshold"] == VALIDATED
    # the batch job pins them, the app pins them (and labels with them), a replica uses them
    pinned = pin_members(store, SERVED_MEMBERS)
    assert pinned[0]["threshold"] == chosen and pinned[0]["version"] == art.version
    args = BlurringArgs(artifact_store=str(blur_store))
    args.pin_models(store)
    assert args.detector.members[0]["threshold"] == chosen
    assert f"face={chosen['face']},plate={chosen['plate']}" in args.detector.label()
    ensemble = build_backend(SERVED_MEMBERS, store, "cpu", 1)
    assert ensemble.thresholds[0] == {FACE: chosen["face"], PLATE: chosen["plate"]}


def test_an_artifact_without_validated_thresholds_is_refused_naming_the_fix(blur_store, tmp_path):
    new = ArtifactStore(blur_store).load("blurring_fcos")
    old = ArtifactStore(tmp_path / "old")
    w = old.new_version("blurring_fcos")
    for name in new.manifest["files"]:
        w.path(name).write_bytes(new.file(name).read_bytes())
    w.commit(config={k: v for k, v in new.config.items() if k != "thresholds"})
    member = OURS | {"threshold": VALIDATED}
    with pytest.raises(ArtifactError, match="no validated thresholds.*--from-artifact"):
        pin_members(old, [member])
    with pytest.raises(ArtifactError, match="no validated thresholds"):
        BlurringArgs(
            artifact_store=str(tmp_path / "old"), detector={"members": [member]}
        ).pin_models(old)
    # numbers given in the spec still serve it
    assert pin_members(old, [OURS | {"threshold": 0.4}])[0]["threshold"] == 0.4
    with pytest.raises(ValueError, match="not a number"):
        build_backend([{"kind": "yunet", "threshold": VALIDATED}])
