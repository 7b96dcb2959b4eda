"""CenterFace's int8 graph (issue 25): statically quantised with its output convolutions in
fp32, calibrated on real photos, stored as an artifact, and served as a detector member."""

from __future__ import annotations

import numpy as np
import pytest

from mlsd.artifacts import ArtifactError, ArtifactStore
from mlsd.blurring import centerface
from mlsd.blurring import data as D
from mlsd.blurring.artifact import (
    CENTERFACE_INT8,
    CENTERFACE_INT8_SPEC,
    centerface_graph,
    check_member,
    member_artifact,
    pin_members,
    write_centerface_int8,
)
from mlsd.blurring.backends import CenterFace, build_backend
from mlsd.blurring.evaluation import at_scale, box_iou

INT8 = CENTERFACE_INT8_SPEC


@pytest.fixture(scope="module")
def photos():
    if not (D.data_root() / "face_mask_detection").exists():
        pytest.skip("face photos not under ../shared/data")
    return [img for img, _, _ in at_scale(D.faces("test")[:4])]  # real crowds, long side 1024


@pytest.fixture(scope="module")
def int8_store(photos, tmp_path_factory):
    root = tmp_path_factory.mktemp("centerface")
    graph = centerface.quantize(root / "graph.onnx", photos[:2])
    write_centerface_int8(ArtifactStore(root / "store"), CENTERFACE_INT8, graph, {}, {}, {})
    return root


def test_the_int8_graph_keeps_its_output_convolutions_in_fp32(int8_store):
    import onnx

    g = onnx.load(
        str(ArtifactStore(int8_store / "store").load(CENTERFACE_INT8).file(centerface.INT8_FILE))
    )
    made_by = {o: n for n in g.graph.node for o in n.output}
    convs = [n for n in g.graph.node if n.op_type == "Conv"]
    # a quantised conv reads its weights through DequantizeLinear; an fp32 one reads them raw
    quantised = [c for c in convs if made_by.get(c.input[1]) is not None]
    heads = [c for c in convs if set(c.output) & centerface._HEAD_CONV_OUTPUTS]
    assert len(heads) == 4
    assert all(made_by.get(h.input[1]) is None for h in heads)
    assert len(quantised) == len(convs) - 4 > 40  # the backbone and neck are int8


def test_int8_finds_the_faces_fp32_finds(photos, int8_store):
    """On real crowd photos it was not calibrated on: the faces fp32 CenterFace finds above the
    served threshold, the int8 graph finds too (IoU >= 0.5) at the same threshold, nearly all."""
    fp32 = CenterFace(long_side=None, num_threads=1)
    int8 = build_backend(INT8, ArtifactStore(int8_store / "store"), "cpu", 1)
    assert isinstance(int8, CenterFace)
    found, total = 0, 0
    for img in photos[2:]:  # the fixture calibrated on photos[:2]
        a, b = fp32(img).above(0.2), int8(img).above(0.2)
        total += len(a)
        if len(a) and len(b):
            found += int((box_iou(a.boxes, b.boxes).max(1) >= 0.5).sum())
    assert total >= 5
    assert found >= 0.9 * total


def test_a_missing_or_wrong_centerface_artifact_is_refused_by_name(blur_store, tmp_path):
    store = ArtifactStore(blur_store)  # its centerface_int8: calibrated on SYNTHETIC photos
    assert member_artifact(INT8) == CENTERFACE_INT8
    assert member_artifact({"kind": "centerface"}) is None  # the packaged fp32 graph
    assert member_artifact({"kind": "yunet"}) is None
    assert centerface_graph(None, {"kind": "centerface"}) is None
    with pytest.raises(ValueError, match="backend must be one of"):
        member_artifact({"kind": "centerface", "backend": "torch"})
    with pytest.raises(ValueError, match="backend must be one of"):
        build_backend({"kind": "centerface", "backend": "int4"}, None)
    with pytest.raises(ValueError, match="onnx-int8"):  # looks int8, would run fp32
        member_artifact({"kind": "centerface", "artifact": CENTERFACE_INT8})
    with pytest.raises(ArtifactError, match=CENTERFACE_INT8):
        build_backend(INT8, ArtifactStore(tmp_path / "empty"))
    # our detector's artifact named as CenterFace's: no int8 graph of it there
    wrong = INT8 | {"artifact": "blurring_fcos"}
    with pytest.raises(ArtifactError, match="train.blurring_centerface"):
        build_backend(wrong, store)
    with pytest.raises(ArtifactError, match="train.blurring_centerface"):
        check_member(store.load("blurring_fcos"), wrong)
    # a job pins every member's artifact to one checked version before it starts
    ours = {"kind": "torch", "artifact": "blurring_fcos", "backend": "onnx-int8"}
    pinned = pin_members(store, [ours, INT8, {"kind": "yunet"}])
    assert [m.get("version") for m in pinned] == [
        store.load("blurring_fcos").version,
        store.load(CENTERFACE_INT8).version,
        None,
    ]
    assert "version" not in INT8  # the caller's specs are left as they were
    with pytest.raises(ArtifactError, match="train.blurring_centerface"):
        pin_members(store, [wrong])
    with pytest.raises(ArtifactError, match=CENTERFACE_INT8):
        pin_members(ArtifactStore(tmp_path / "empty"), [INT8])


def test_quantising_needs_photos(tmp_path):
    with pytest.raises(ValueError, match="calibration photos"):
        centerface.quantize(tmp_path / "x.onnx", [])
    packaged = centerface.packaged_graph()
    dims = [d.dim_param or d.dim_value for d in packaged.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["B", 3, "H", "W"]
    assert centerface.input_blob(np.zeros((100, 70, 3), np.uint8)).shape == (1, 3, 128, 96)
