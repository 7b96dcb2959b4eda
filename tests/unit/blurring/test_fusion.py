"""Ensemble fusion: how overlapping boxes of several detectors become one blurred region."""

from __future__ import annotations

import numpy as np
import pytest

from mlsd.blurring import evaluation as E
from mlsd.blurring.backends import Ensemble, fuse
from mlsd.blurring.data import FACE, PLATE
from mlsd.blurring.pipeline import Detections


def _det(boxes, scores, labels) -> Detections:
    return Detections(
        np.asarray(boxes, np.float32), np.asarray(scores, np.float32), np.asarray(labels, np.int64)
    )


# a tight box (one detector, higher score) and a wider one (another detector) on the same face,
# a plate overlapping them (another class: never merged) and a lone face elsewhere
BOXES = [[100, 100, 140, 140], [95, 92, 145, 150], [100, 100, 140, 140], [300, 300, 320, 320]]
SCORES = [0.9, 0.6, 0.7, 0.5]
LABELS = [FACE, FACE, PLATE, FACE]


def test_enclose_keeps_the_extent_of_the_group_and_its_best_score():
    out = fuse(_det(BOXES, SCORES, LABELS), 0.5, "enclose")
    assert len(out) == 3  # the two faces merged; the plate and the far face kept apart
    face = out.boxes[(out.labels == FACE) & (out.scores == np.float32(0.9))][0]
    np.testing.assert_allclose(face, [95, 92, 145, 150])
    assert sorted(out.labels.tolist()) == sorted([FACE, FACE, PLATE])


def test_nms_keeps_the_best_box_and_wbf_averages_by_score():
    det = _det(BOXES, SCORES, LABELS)
    nms = fuse(det, 0.5, "nms")
    assert [100, 100, 140, 140] in nms.boxes[nms.labels == FACE].tolist()
    wbf = fuse(det, 0.5, "wbf")
    merged = wbf.boxes[(wbf.labels == FACE) & (wbf.scores == np.float32(0.9))][0]
    expect = (0.9 * np.array(BOXES[0]) + 0.6 * np.array(BOXES[1])) / 1.5
    np.testing.assert_allclose(merged, expect, rtol=1e-5)


@pytest.mark.parametrize("method", ["enclose", "wbf", "nms"])
def test_a_zero_area_box_is_fused_not_a_crash(method):
    """A box clipped flat at the image border has IoU NaN with itself; it is still a box."""
    det = _det([[0, 10, 0, 30], *BOXES], [0.95, *SCORES], [FACE, *LABELS])
    out = fuse(det, 0.5, method)
    assert len(out) == 4  # the flat box, the merged faces, the plate, the far face
    assert [0, 10, 0, 30] in out.boxes.tolist()


def test_fusion_of_nothing_and_unknown_methods():
    assert len(fuse(Detections.empty(), 0.5, "enclose")) == 0
    with pytest.raises(ValueError, match="fusion"):
        fuse(_det(BOXES, SCORES, LABELS), 0.5, "mean")


def test_an_enclosing_union_covers_what_nms_would_leave_partly_unblurred():
    """The reason for the served default: NMS keeps the tight high-scoring box, whose 1.2x
    blur leaves part of the labelled face bare; the enclosing box covers it."""
    gt = np.array([[90, 85, 150, 155]], np.float32)
    r = E.ImageResult(gt, np.array([FACE]), _det(BOXES[:2], SCORES[:2], [FACE, FACE]), 400, 400)
    cover = {
        m: E.coverage_stats(E.union_results([[r]], [0.0], fusion=m), 0.0, label=FACE)
        for m in ("nms", "enclose")
    }
    assert cover["nms"]["coverage"] == 0.0 and cover["enclose"]["coverage"] == 1.0
    assert cover["enclose"]["fp_per_image"] == 0.0  # still one box, matched to the face


class _Fixed:
    labels = (FACE,)

    def __init__(self, name, det):
        self.name, self.det = name, det

    def __call__(self, image):
        return self.det


def test_ensemble_cuts_each_member_at_its_threshold_then_fuses():
    a = _Fixed("a", _det([BOXES[0]], [0.9], [FACE]))
    b = _Fixed("b", _det([BOXES[1], BOXES[3]], [0.6, 0.2], [FACE, FACE]))
    ens = Ensemble([a, b], [0.5, 0.3], fusion="enclose")
    out = ens(np.zeros((400, 400, 3), np.uint8))
    assert len(out) == 1  # b's 0.2 box is under b's threshold
    np.testing.assert_allclose(out.boxes[0], BOXES[1])
    with pytest.raises(ValueError):
        Ensemble([a, b], [0.5, 0.3], fusion="vote")
