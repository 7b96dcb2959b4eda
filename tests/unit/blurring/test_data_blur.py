"""Readers, augmentation, blurring, tiling and the detectors' shapes (no Ray)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from mlsd.blurring import data as D
from mlsd.blurring.augment import Augmenter, pad_targets, unpad_targets
from mlsd.blurring.backends import build_backend
from mlsd.blurring.blur import BlurConfig, blur, encode_jpeg
from mlsd.blurring.evaluation import box_iou
from mlsd.blurring.model import FAMILIES, DetectorConfig, build_detector, set_input_scale
from mlsd.blurring.pipeline import Detections, detect_image, detect_torch, tiles, train_step


def _have(fn):
    try:
        return fn()
    except D.DataNotFound:
        pytest.skip("blurring data not under ../shared/data")


@pytest.mark.data
def test_the_readers_give_the_documented_splits():
    train, val, test = (_have(lambda s=s: D.faces(s)) for s in ("train", "val", "test"))
    assert len(train) + len(val) == 764 and sum(len(e.boxes) for e in train + val) == 3225
    assert len(test) == 89 and sum(len(e.boxes) for e in test) == 847
    assert not {e.path.name for e in test} & {e.path.name for e in train + val}
    plates = {s: _have(lambda s=s: D.plates(s)) for s in ("train", "val", "test")}
    assert sum(len(v) for v in plates.values()) == 330 and len(plates["test"]) == 110
    for e in train[:50] + plates["test"]:
        assert (e.boxes[:, 2] <= e.width).all() and (e.boxes[:, 3] <= e.height).all()
        assert (e.boxes[:, :2] >= 0).all() and (e.boxes[:, 2:] > e.boxes[:, :2]).all()
    smoke = _have(D.dlib_smoke)
    assert len(smoke) == 9 and sum(len(e.boxes) for e in smoke) == 43


def test_augmentation_moves_boxes_with_the_pixels():
    img = np.zeros((300, 400, 3), np.uint8)
    img[100:140, 200:240] = 255  # a white square, and its box
    aug = Augmenter(seed=3)
    for _ in range(10):
        out, boxes, labels = aug(
            img, np.array([[200, 100, 240, 140]], np.float32), np.array([D.FACE])
        )
        assert out.shape == (416, 416, 3)
        for x1, y1, x2, y2 in boxes.round().astype(int):
            if min(x2 - x1, y2 - y1) < 8:
                continue  # cut by the crop edge
            inside = out[y1 + 2 : y2 - 2, x1 + 2 : x2 - 2].astype(float).mean()
            assert inside > 120, "the box no longer sits on the square"
    pb, pl = pad_targets(boxes, labels)
    t = unpad_targets(pb, pl)
    assert len(t["boxes"]) == len(boxes)


def test_blur_removes_detail_inside_and_leaves_the_rest():
    rng = np.random.default_rng(0)
    img = (rng.random((200, 300, 3)) * 255).astype(np.uint8)
    det = Detections(
        np.array([[50, 50, 110, 120], [200, 20, 280, 50]], np.float32),
        np.ones(2, np.float32),
        np.array([D.FACE, D.PLATE]),
    )
    for method in ("gaussian", "pixelate"):
        out = blur(img, det, BlurConfig(method=method))
        for x1, y1, x2, y2 in det.boxes.astype(int):  # the whole ground-truth box is blurred
            a, b = img[y1:y2, x1:x2].astype(float), out[y1:y2, x1:x2].astype(float)
            assert np.abs(np.diff(b, axis=1)).mean() < 0.3 * np.abs(np.diff(a, axis=1)).mean()
        assert (out[150:, :40] == img[150:, :40]).all()  # far from the boxes: untouched
    with pytest.raises(ValueError):
        BlurConfig(margin=0.9)


def test_encoded_output_has_no_metadata():

    jpeg = encode_jpeg(np.zeros((10, 10, 3), np.uint8))
    img = Image.open(io.BytesIO(jpeg))
    assert not img.getexif() and "exif" not in img.info


def test_tiles_cover_panoramas_and_boxes_come_back_in_image_pixels():
    assert tiles(100, 100, 1024, 128) == [(0, 0, 100, 100)]
    ts = tiles(1000, 20000, 1024, 128)
    covered = np.zeros(20000, bool)
    for x1, _, x2, _ in ts:
        covered[x1:x2] = True
    assert covered.all()

    class Square:  # finds the bright square wherever the tile puts it
        labels = (D.FACE,)

        def __call__(self, im):
            ys, xs = np.nonzero(im[..., 0] > 200)
            if not len(xs):
                return Detections.empty()
            box = np.array([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], np.float32)
            return Detections(box, np.ones(1, np.float32), np.array([D.FACE]))

    pano = np.zeros((200, 12000, 3), np.uint8)
    pano[80:120, 9000:9040] = 255
    det = detect_image(Square(), pano, long_side=1024)
    assert len(det) == 1 and np.allclose(det.boxes[0], [9000, 80, 9040, 120], atol=1)
    photo = np.zeros((600, 800, 3), np.uint8)
    photo[100:160, 400:460] = 255
    det = detect_image(Square(), photo, long_side=1024)  # resized to 1024, mapped back
    assert np.allclose(det.boxes[0], [400, 100, 460, 160], atol=2)


@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_trains_a_step_and_detects(family):
    torch.manual_seed(0)
    model = build_detector(DetectorConfig(family=family, fpn_channels=32), pretrained=False)
    set_input_scale(model, 128)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    images = [torch.rand(3, 128, 128) for _ in range(2)]
    targets = [{"boxes": torch.tensor([[10.0, 10, 40, 44]]), "labels": torch.tensor([1])}] * 2
    trainable = [p for p in model.parameters() if p.requires_grad]
    before = [p.detach().clone() for p in trainable]
    logs = train_step(model, opt, images, targets)
    assert np.isfinite(logs["loss"]) and len(logs) >= 3  # classification + box terms
    moved = sum(not torch.equal(a, p.detach()) for a, p in zip(before, trainable, strict=True))
    assert moved > len(trainable) // 2  # the step updated the weights (heads and backbone)

    (det,) = detect_torch(model, [np.zeros((90, 120, 3), np.uint8)], long_side=128)
    assert det.boxes.shape[1] == 4 and (det.boxes[:, 2] <= 120 + 1e-3).all()


@pytest.mark.data
def test_a_packaged_detector_run_at_a_larger_side_answers_in_the_images_coordinates():
    """``long_side`` upscales before CenterFace runs (small faces get pixels); its boxes come
    back in the given image's coordinates, where the native run finds the same faces."""

    ex = _have(D.dlib_smoke)[0]
    img = D.load_rgb(ex.path)
    native = build_backend({"kind": "centerface"}, num_threads=1)
    large = build_backend({"kind": "centerface", "long_side": 2 * max(img.shape[:2])})
    assert large.long_side == 2 * max(img.shape[:2]) and native.long_side is None
    a, b = native(img).above(0.5), large(img).above(0.5)
    assert len(a) >= 3 and len(b) >= 3
    assert (b.boxes[:, 2] <= img.shape[1] + 1).all() and (b.boxes[:, 3] <= img.shape[0] + 1).all()
    assert (box_iou(a.boxes, b.boxes).max(1) > 0.5).mean() >= 0.8  # the same faces, same place


@pytest.mark.parametrize(
    "spec",
    [
        {"kind": "centerface", "long_side": -5},
        {"kind": "yunet", "long_side": "2048"},
        {"kind": "haar_face", "long_side": 2048},
    ],
)
def test_a_bad_long_side_is_refused_naming_it(spec):

    with pytest.raises(ValueError, match="long_side"):
        build_backend(spec)
