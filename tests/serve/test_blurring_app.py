"""The blurring app over real HTTP: real face photos, the packaged detectors, privacy
invariants, bad input."""

from __future__ import annotations

import io
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from ray import serve

from apps.blurring import BlurringArgs, DetectorArgs, build_app
from mlsd.artifacts import ArtifactError, ArtifactStore
from mlsd.blurring import data as D
from mlsd.blurring.backends import PACKAGED_UNION, build_backend
from mlsd.blurring.data import load_rgb
from mlsd.blurring.pipeline import detect_image
from mlsd.image import decode_image
from mlsd.shadow import box_agreement
from tests.conftest import new_objects
from tests.serve.http import api, as_user

pytestmark = [pytest.mark.serve, pytest.mark.slow, pytest.mark.data]


def _faces():

    try:
        return D.faces("test")
    except D.DataNotFound:
        pytest.skip("face_mask_detection not under ../shared/data")


@pytest.fixture(scope="module")
def app_url(serve_instance, tmp_path_factory):

    out = new_objects(tmp_path_factory.mktemp("blurred"))
    args = BlurringArgs(
        artifact_store=str(tmp_path_factory.mktemp("none")),
        output_store=out,
        detector={"members": PACKAGED_UNION},  # the packaged face detectors: no training
        max_upload_bytes=8_000_000,
        max_pixels=30_000_000,
        shadow={
            "detector": {"members": [{"kind": "yunet", "threshold": 0.5}]},
            "share": 1.0,
            "timeout_s": 30.0,
        },
    )
    serve.run(build_app(args), name="blurring", route_prefix="/blurring")
    yield f"{serve_instance}/blurring", out
    serve.delete("blurring")


def _post(url, data: bytes, client=api, name="x.jpg"):
    return client.post(f"{url}/images", files={"image": (name, data)}, timeout=120)


def _jpeg(arr: np.ndarray, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=95, **kw)
    return buf.getvalue()


def _blur_share(orig: np.ndarray, out: np.ndarray, boxes: np.ndarray) -> float:
    """Share of ground-truth boxes whose pixels lost most of their detail (blurred)."""
    hit = 0
    for x1, y1, x2, y2 in boxes.round().astype(int):
        a = orig[y1:y2, x1:x2].astype(np.float32)
        b = out[y1:y2, x1:x2].astype(np.float32)
        detail = lambda z: np.abs(np.diff(z, axis=0)).mean() + np.abs(np.diff(z, axis=1)).mean()  # noqa: E731
        hit += detail(b) < 0.6 * detail(a) + 1e-6
    return hit / max(len(boxes), 1)


def test_faces_are_blurred_stored_and_fetched(app_url):
    url, out = app_url
    ex = max(_faces()[:20], key=lambda e: len(e.boxes))

    orig = load_rgb(ex.path)
    r = _post(url, _jpeg(orig))
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["boxes"] and all(b["label"] == "face" for b in body["boxes"])
    got = api.get(f"{url}/{body['url']}", timeout=30)
    assert got.status_code == 200 and got.headers["content-type"] == "image/jpeg"
    img = Image.open(io.BytesIO(got.content))
    assert not img.getexif() and "exif" not in img.info  # no metadata leaves
    blurred = np.asarray(img.convert("RGB"))
    assert blurred.shape == orig.shape
    big = ex.boxes[(ex.boxes[:, 2] - ex.boxes[:, 0]) >= 12]
    assert _blur_share(orig, blurred, big) >= 0.7  # most faces lost their detail
    files = sorted(p.suffix for p in Path(out).rglob("*") if p.is_file())
    assert set(files) <= {".jpg", ".json"}  # never an original (store_originals is off)


def test_exif_rotation_and_gps_are_handled(app_url):

    url, _ = app_url
    ex = max(_faces()[:20], key=lambda e: len(e.boxes))
    upright = load_rgb(ex.path)
    stored = np.ascontiguousarray(np.rot90(upright, k=1))  # as a camera held sideways stores it
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 CW to display (undoes rot90 k=1)
    exif[0x8825] = {1: "N", 2: (52.0, 31.0, 0.0)}  # a GPS position
    r = _post(url, _jpeg(stored, exif=exif.tobytes()))
    assert r.status_code == 201, r.text
    got = Image.open(io.BytesIO(api.get(f"{url}/{r.json()['url']}", timeout=30).content))
    assert not got.getexif()
    blurred = np.asarray(got.convert("RGB"))
    assert blurred.shape == upright.shape  # returned as displayed
    big = ex.boxes[(ex.boxes[:, 2] - ex.boxes[:, 0]) >= 12]
    assert _blur_share(upright, blurred, big) >= 0.7  # blurred where the faces are shown


def test_images_belong_to_their_uploader(app_url, keys):
    url, _ = app_url
    alice, bob = as_user(keys["alice"]), as_user(keys["bob"])
    r = _post(url, _jpeg(np.full((64, 64, 3), 128, np.uint8)), client=alice)
    assert r.status_code == 201
    path = f"{url}/{r.json()['url']}"
    assert alice.get(path, timeout=30).status_code == 200
    assert bob.get(path, timeout=30).status_code == 404
    assert as_user(None).get(path, timeout=30).status_code == 401
    assert _post(url, b"x", client=as_user(keys["reader"])).status_code == 403
    assert api.get(f"{url}/images/{'0' * 32}", timeout=30).status_code == 404
    assert api.get(f"{url}/images/..%2Fx", timeout=30).status_code in (404, 422)


def _png(arr, mode=None, **kw) -> bytes:
    buf = io.BytesIO()
    (Image.fromarray(arr, mode) if mode else Image.fromarray(arr)).save(buf, format="PNG", **kw)
    return buf.getvalue()


def _cmyk() -> bytes:
    buf = io.BytesIO()
    Image.new("CMYK", (80, 60), (10, 200, 30, 0)).save(buf, format="JPEG")
    return buf.getvalue()


def _palette_alpha() -> bytes:
    img = Image.new("RGBA", (50, 40), (255, 0, 0, 128)).convert("P")
    buf = io.BytesIO()
    img.save(buf, format="PNG", transparency=0)
    return buf.getvalue()


def _bomb() -> bytes:
    buf = io.BytesIO()
    Image.new("L", (8000, 8000), 0).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize(
    "name, make, status",
    [
        ("not an image", lambda: b"hello, not an image" * 10, 400),
        ("zero bytes", lambda: b"", 400),
        ("truncated jpeg", lambda: _jpeg(np.full((64, 64, 3), 90, np.uint8))[:200], 400),
        ("decompression bomb", _bomb, 413),
        ("cmyk jpeg", _cmyk, 201),
        ("16-bit png", lambda: _png(np.full((40, 50), 40000, np.uint16)), 201),
        ("palette png with alpha", _palette_alpha, 201),
        ("1x1", lambda: _png(np.zeros((1, 1, 3), np.uint8)), 201),
        ("20,000 px wide", lambda: _jpeg(np.full((100, 20000, 3), 120, np.uint8)), 201),
    ],
)
def test_bad_and_odd_inputs(app_url, name, make, status):
    url, _ = app_url
    r = _post(url, make())
    assert r.status_code == status, (name, r.status_code, r.text)
    if status == 201:
        img = Image.open(io.BytesIO(api.get(f"{url}/{r.json()['url']}", timeout=30).content))
        assert img.format == "JPEG" and img.size[0] >= 1
    assert api.get(f"{url}/healthz", timeout=30).status_code == 200


@pytest.mark.parametrize("fault", ["error", "hang"])
def test_a_failing_detector_never_lets_an_image_through(serve_instance, tmp_path, fault):

    out = new_objects(tmp_path / "out")
    args = BlurringArgs(
        artifact_store=str(tmp_path),
        output_store=out,
        detect_timeout_s=3.0,
        fault_injection={"Detector": fault},
        detector={"members": [{"kind": "centerface", "threshold": 0.2}]},
    )
    name = f"blur_{fault}"
    serve.run(build_app(args), name=name, route_prefix=f"/blur-{fault}")
    try:
        url = f"{serve_instance}/blur-{fault}"
        t0 = time.time()
        r = _post(url, _jpeg(np.full((64, 64, 3), 100, np.uint8)))
        assert r.status_code == 503 and "not published" in r.json()["detail"], r.text
        assert time.time() - t0 < 60
        assert not [p for p in Path(out).rglob("*") if p.is_file()]  # nothing was stored
        assert api.get(f"{url}/healthz", timeout=30).status_code == 200
    finally:
        serve.delete(name)


def _settled_shadow(url: str) -> dict:
    """The shadow report once no mirrored request is still finishing (two equal reads)."""
    last = None
    for _ in range(60):
        rep = api.get(f"{url}/shadow", timeout=30).json()
        if last is not None and rep["completed"] == last["completed"]:
            return rep
        last = rep
        time.sleep(1.0)
    return rep


def test_the_shadow_detector_is_compared_box_by_box(app_url):
    """The report's box F1 and would-have-leaked counts are those of the primary's answered
    boxes against YuNet@0.5 recomputed here on the same decoded photos."""
    url, _ = app_url
    before = _settled_shadow(url)
    shadow_args = DetectorArgs(members=[{"kind": "yunet", "threshold": 0.5}])
    shadow = build_backend(
        shadow_args.members, nms_iou=shadow_args.nms_iou, fusion=shadow_args.fusion
    )
    expected = []
    for e in _faces()[:4]:
        data = _jpeg(load_rgb(e.path))
        r = _post(url, data)
        assert r.status_code == 201
        label = {name: float(k) for k, name in D.LABELS.items()}
        primary = [[label[b["label"]], *b["box"]] for b in r.json()["boxes"]]
        image = np.asarray(decode_image(data, 8_000_000, 30_000_000).convert("RGB"))
        det = detect_image(shadow, image, shadow_args.long_side)
        rows = [[float(lab), *map(float, b)] for b, lab in zip(det.boxes, det.labels, strict=True)]
        expected.append(box_agreement(primary, rows))
    deadline = time.time() + 60
    while time.time() < deadline:
        rep = api.get(f"{url}/shadow", timeout=30).json()
        if rep["completed"] >= before["completed"] + 4:
            break
        time.sleep(1)
    assert rep["enabled"] and rep["comparison"] == "box_f1" and rep["errors"] == 0
    assert rep["completed"] == before["completed"] + 4
    assert rep["shadow"]["model_version"] == "yunet@0.5"
    # the four new scores, from the running mean's sums (boxes are answered to 0.1 px)
    added = rep["mean_score"] * rep["completed"] - (before["mean_score"] or 0) * before["completed"]
    assert added == pytest.approx(sum(x["score"] for x in expected), abs=0.02), expected
    for key in ("primary_only", "shadow_only"):  # would-have-leaked / would-have-caught
        grown = rep["totals"][key] - before.get("totals", {}).get(key, 0.0)
        assert grown == sum(x[key] for x in expected), (key, expected)
    assert any(x["score"] < 1.0 for x in expected) or any(x["primary_only"] for x in expected), (
        "the union and YuNet alone should disagree somewhere on four crowded photos"
    )
    assert as_user(None).get(f"{url}/shadow", timeout=30).status_code == 401


def test_a_missing_or_corrupt_detector_artifact_fails_start_up_naming_it(
    serve_instance, blur_store, tmp_path
):

    ours = [{"kind": "torch", "artifact": "blurring_fcos", "threshold": {"plate": 0.5}}]
    with pytest.raises(ArtifactError, match="blurring_fcos"):
        build_app(BlurringArgs(artifact_store=str(tmp_path / "empty"), detector={"members": ours}))
    broken = tmp_path / "broken"
    shutil.copytree(blur_store, broken)
    for f in broken.rglob("detector.pt"):
        f.write_bytes(f.read_bytes()[:1000])  # a truncated copy
    with pytest.raises(ArtifactError, match=r"detector\.pt is corrupt"):
        build_app(BlurringArgs(artifact_store=str(broken), detector={"members": ours}))
    # a version from before the ONNX export, served through onnxruntime: refused at build
    store = ArtifactStore(tmp_path / "old")
    new = ArtifactStore(blur_store).load("blurring_fcos")
    w = store.new_version("blurring_fcos")
    w.path("detector.pt").write_bytes(new.file("detector.pt").read_bytes())
    w.commit(config=new.config, data={}, metrics={})
    int8 = [ours[0] | {"backend": "onnx-int8"}]
    with pytest.raises(ArtifactError, match="onnx-int8.*--export-only"):
        build_app(BlurringArgs(artifact_store=str(tmp_path / "old"), detector={"members": int8}))
    # CenterFace's int8 graph is an artifact too: pinned, checked and named like ours
    cf = [{"kind": "centerface", "backend": "onnx-int8", "threshold": 0.3}]
    with pytest.raises(ArtifactError, match="centerface_int8"):
        build_app(BlurringArgs(artifact_store=str(tmp_path / "empty"), detector={"members": cf}))
    args = BlurringArgs(artifact_store=str(blur_store), detector={"members": ours + cf})
    args.pin_models(ArtifactStore(blur_store))
    version = ArtifactStore(blur_store).load("centerface_int8").version
    assert args.detector.members[1]["version"] == version
    assert f"centerface_int8/{version}:onnx-int8@0.3" in args.detector.label()
    with pytest.raises(ValueError, match="backend must be one of"):
        BlurringArgs(detector={"members": [cf[0] | {"backend": "torch"}]}).pin_models(None)


def test_drift_report_says_why_it_is_off(app_url):
    rep = api.get(f"{app_url[0]}/drift", timeout=30).json()
    assert rep == {
        "enabled": False,
        "reason": "no detector of ours is served (the reference is in our detector's artifact)",
    }
