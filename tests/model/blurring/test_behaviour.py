"""The packaged face detectors' union (the served configuration's face members that need no
training) on real photos it has never seen: dlib's PASCAL group photos."""

from __future__ import annotations

import numpy as np
import pytest

from mlsd.blurring import data as D
from mlsd.blurring import evaluation as E
from mlsd.blurring.backends import PACKAGED_UNION as DEFAULT_MEMBERS
from mlsd.blurring.backends import build_backend
from mlsd.blurring.pipeline import detect_image

pytestmark = pytest.mark.data


def _smoke():
    try:
        return D.dlib_smoke()
    except (D.DataNotFound, FileNotFoundError):
        pytest.skip("dlib_faces_pascal not under ../shared/data")


def test_the_served_ensemble_covers_the_smoke_set_faces():
    det = build_backend([dict(m) for m in DEFAULT_MEMBERS], num_threads=1)
    results = []
    for img, boxes, labels in E.at_scale(_smoke()):
        results.append(
            E.ImageResult(boxes, labels, detect_image(det, img), img.shape[1], img.shape[0])
        )
    stats = E.coverage_stats(results, 0.0, label=D.FACE)
    assert stats["gt"] == 43
    assert stats["coverage"] >= 0.85, stats  # group photos, mostly frontal faces
    assert stats["fp_per_image"] <= 5


def test_a_face_moved_in_the_frame_is_found_where_it_moved():
    ex = max(_smoke(), key=lambda e: len(e.boxes))
    img = D.load_rgb(ex.path)
    det = build_backend([dict(m) for m in DEFAULT_MEMBERS], num_threads=1)
    base = detect_image(det, img)
    shifted = np.zeros_like(img)
    dx = img.shape[1] // 4
    shifted[:, dx:] = img[:, :-dx]
    moved = detect_image(det, shifted)
    keep = base.boxes[:, 2] + dx < img.shape[1]  # faces still in the frame
    expect = base.boxes[keep] + np.array([dx, 0, dx, 0], np.float32)
    iou = E.box_iou(expect, moved.boxes)
    assert len(expect) and (iou.max(1) > 0.5).mean() >= 0.8
