"""The fast detector path (issue 25): a pyramid from stride 8 with shallow heads, its backbone
and heads exported to ONNX (fp32 and int8) and decoded by torchvision's own code."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mlsd.artifacts import ArtifactError, ArtifactStore
from mlsd.blurring import data as D
from mlsd.blurring.artifact import DETECTOR_FILES, calibration_photos, write_detector
from mlsd.blurring.backends import DenseDetector, TorchDetector, build_backend
from mlsd.blurring.evaluation import box_iou
from mlsd.blurring.model import (
    DenseFCOS,
    DetectorConfig,
    build_detector,
    decode_dense,
    set_input_scale,
)
from mlsd.blurring.pipeline import _batch_at_scale, to_tensor, train_step

FAST = {"min_stride": 8, "head_convs": 2}


def test_the_pyramid_start_sets_the_levels_and_their_anchors():
    assert DetectorConfig().anchor_sizes == (8, 16, 32, 64, 128)
    fast = DetectorConfig(**FAST)
    assert fast.strides == [8, 16, 32] and fast.anchor_sizes == (16, 32, 64, 128)
    model = build_detector(DetectorConfig(fpn_channels=32, **FAST), pretrained=False)
    assert len(model.head.classification_head.conv) == 2 * 3  # conv, norm, relu per layer
    old = DetectorConfig.from_dict({"family": "fcos", "anchor_sizes": [8, 16, 32, 64, 128]})
    assert old.min_stride == 4 and old.head_convs == 4  # artifacts written before these keys
    for bad, field in (
        ({"min_stride": 2}, "min_stride"),
        ({"head_convs": 0}, "head_convs"),
        ({"min_stride": 8, "anchor_sizes": (8,)}, "anchor_sizes"),
    ):
        with pytest.raises(ValueError, match=field):
            DetectorConfig(**bad)
    with pytest.raises(ValueError, match="head_convs"):
        DetectorConfig(family="retinanet", head_convs=2)


@pytest.mark.parametrize("kw", [{}, FAST], ids=["stride4", "fast"])
def test_box_regression_starts_alive(kw):
    """FCOS's box distances pass a ReLU: at torchvision's zero bias a model can start (or be
    pushed) where every location predicts a zero-size box, the GIoU loss is exactly 1.0 and no
    gradient flows (plates-only runs on 63 EU photos never learnt a box). The positive initial
    bias gives every location a box of some size, so the first step's box loss is below 1."""
    torch.manual_seed(0)
    model = build_detector(DetectorConfig(fpn_channels=32, **kw), pretrained=False)
    set_input_scale(model, 256)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    images = [torch.rand(3, 256, 256) for _ in range(2)]
    targets = [{"boxes": torch.tensor([[40.0, 50, 120, 90]]), "labels": torch.tensor([2])}] * 2
    logs = train_step(model, opt, images, targets)
    assert logs["bbox_regression"] < 0.95


@pytest.mark.parametrize("kw", [{}, FAST], ids=["stride4", "fast"])
def test_dense_outputs_decode_to_the_models_own_boxes(kw):
    torch.manual_seed(0)
    cfg = DetectorConfig(fpn_channels=32, score_thresh=0.0, **kw)
    model = build_detector(cfg, pretrained=False).eval()
    torch.nn.init.zeros_(model.head.classification_head.cls_logits.bias)  # scores above 0
    set_input_scale(model, 320)
    images = [torch.rand(3, 200, 290), torch.rand(3, 330, 211)]  # padding, both orientations
    with torch.inference_mode():
        ref = model(images)
        batch, _ = model.transform(images)
        dense = DenseFCOS(model)({"image": batch.tensors})
        out = decode_dense(model, cfg, dense, batch, [tuple(i.shape[-2:]) for i in images])
        with pytest.raises(ValueError, match="locations"):
            decode_dense(model, cfg, dense[:, :-3], batch, [(200, 290), (330, 211)])
    for r, o in zip(ref, out, strict=True):
        assert len(r["boxes"]) > 0
        assert torch.allclose(r["boxes"], o["boxes"]) and torch.equal(r["labels"], o["labels"])


def _photo(seed: int, h: int = 180, w: int = 240) -> np.ndarray:
    """SYNTHETIC: bright rectangles on noise (calibration and a smoke image)."""
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 90, (h, w, 3), dtype=np.uint8)
    img[40:100, 60:110] = 230
    img[120:150, 150:220] = (250, 240, 40)
    return img


@pytest.fixture(scope="module")
def fast_store(tmp_path_factory):
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("fast_blur")
    cfg = DetectorConfig(fpn_channels=32, max_size=320, score_thresh=0.0, **FAST)
    model = build_detector(cfg, pretrained=False)
    torch.nn.init.zeros_(model.head.classification_head.cls_logits.bias)
    meta = {"train": {"epochs": 0}, "data": {"note": "untrained, for tests"}, "metrics": {}}
    photos = [_photo(i) for i in range(3)]
    write_detector(ArtifactStore(root), "fast", model, cfg, **meta, calibration=photos)
    return ArtifactStore(root)


def test_an_fcos_artifact_carries_its_fp32_and_int8_graphs(fast_store):
    art = fast_store.load("fast")
    for name in DETECTOR_FILES.values():
        assert art.file(name).stat().st_size > 0
    # the int8 graph holds quantised weights: it is smaller than fp32's
    assert (
        art.file("detector.int8.onnx").stat().st_size
        < 0.5 * art.file("detector.onnx").stat().st_size
    )


def test_onnx_backends_find_the_boxes_torch_finds(fast_store):
    spec = {"kind": "torch", "artifact": "fast"}
    torch_det = build_backend(spec, fast_store, "cpu", 1)
    fp32 = build_backend(spec | {"backend": "onnx"}, fast_store, "cpu", 1)
    int8 = build_backend(spec | {"backend": "onnx-int8"}, fast_store, "cpu", 1)
    assert isinstance(torch_det, TorchDetector) and isinstance(int8, DenseDetector)
    assert int8.name == "fast[onnx-int8]"
    for det in (torch_det, fp32, int8):
        det.long_side = 320
    img = _photo(7, 240, 180)
    a, b, c = torch_det(img), fp32(img), int8(img)
    assert len(a) > 10 and (c.boxes[:, 2] <= 180 + 1e-3).all()  # the image's own pixels
    np.testing.assert_allclose(b.scores, a.scores, atol=1e-4)
    np.testing.assert_allclose(b.boxes, a.boxes, atol=1e-2)
    # int8: the top boxes stay where fp32 put them
    top_a, top_c = a.boxes[np.argsort(-a.scores)[:10]], c.boxes[np.argsort(-c.scores)[:10]]
    assert (box_iou(top_a, top_c).max(1) > 0.5).mean() >= 0.7


def test_photos_already_at_scale_batch_as_the_models_transform_does(fast_store):
    """detect_image's photos reach the detector at its scale: the transform's resize would be
    a bilinear pass at scale 1 (the identity), so they are normalised and padded directly."""
    model = build_detector(DetectorConfig(fpn_channels=32, max_size=320, **FAST), False).eval()
    set_input_scale(model, 320)
    imgs = [_photo(1, 320, 200), _photo(2, 250, 320)]  # long side 320, two shapes: padding
    ref, _ = model.transform([to_tensor(im) for im in imgs])
    fast = _batch_at_scale(imgs, model.transform)
    assert fast.image_sizes == ref.image_sizes == [(320, 200), (250, 320)]
    torch.testing.assert_close(fast.tensors, ref.tensors, atol=1e-5, rtol=1e-5)
    # through the served path (onnxruntime) the boxes are the ones torch's own forward finds
    spec = {"kind": "torch", "artifact": "fast"}
    torch_det = build_backend(spec, fast_store, "cpu", 1)
    fp32 = build_backend(spec | {"backend": "onnx"}, fast_store, "cpu", 1)
    torch_det.long_side = fp32.long_side = 320
    a, b = torch_det(imgs[1]), fp32(imgs[1])
    assert len(a) > 10
    np.testing.assert_allclose(b.scores, a.scores, atol=1e-4)
    np.testing.assert_allclose(b.boxes, a.boxes, atol=1e-2)


def test_a_graph_an_artifact_lacks_or_a_bad_backend_is_refused_by_name(blur_store):
    store = ArtifactStore(blur_store)
    with pytest.raises(ValueError, match="backend must be one of"):
        build_backend({"kind": "torch", "artifact": "blurring_fcos", "backend": "tensorrt"}, store)
    old = store.load("blurring_fcos")
    w = store.new_version("blurring_old")  # an artifact from before the export: weights only
    w.path("detector.pt").write_bytes(old.file("detector.pt").read_bytes())
    w.commit(config=old.config, data={}, metrics={})
    with pytest.raises(ArtifactError, match="--export-only"):
        build_backend({"kind": "torch", "artifact": "blurring_old", "backend": "onnx"}, store)


@pytest.mark.data
def test_int8_calibration_photos_come_from_faces_and_plates():
    faces, plates = D.faces("val")[:20], D.plates("val")[:20]
    picked = calibration_photos(faces, plates, 8)
    assert len(picked) == 8
    assert sum(p in faces for p in picked) == 4 and sum(p in plates for p in picked) == 4
    assert calibration_photos([], plates, 8) == plates[::2][:8]
    assert to_tensor(D.load_rgb(picked[0].path)).shape[0] == 3
