"""The visual search app over real HTTP on the session's Serve instance."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from ray import serve

from apps.common import TritonArgs
from apps.visual_search import VisualSearchArgs, build_app
from tests.conftest import catalogue_images, jpeg_bytes, new_objects, new_store, png_bytes
from tests.serve.http import api, as_user

pytestmark = [pytest.mark.serve, pytest.mark.slow]


@pytest.fixture(scope="module")
def app_url(serve_instance, tiny_store, tmp_path_factory):

    tmp = tmp_path_factory.mktemp("live")
    args = VisualSearchArgs(
        artifact_store=str(tiny_store),
        live_log=new_store(tmp / "live.sqlite"),
        object_store=new_objects(tmp / "objects"),
        max_k=50,
        max_upload_bytes=2_000_000,
        max_pixels=4_000_000,
        shadow={"backend": "onnx-int8", "share": 1.0, "timeout_s": 5.0},
        drift={"window": 20, "min_window": 10},
    )
    serve.run(build_app(args), name="visual_search", route_prefix="/visual-search")
    url = f"{serve_instance}/visual-search"
    yield url, args
    serve.delete("visual_search")


def _search(url, data: bytes, k=5, user_id=None, client=api, **kw):
    params = {"k": k} | ({"user_id": user_id} if user_id else {})
    return client.post(
        f"{url}/search", params=params, files={"image": ("q.png", data)}, timeout=30, **kw
    )


def _still_up(url):
    img, _ = catalogue_images(1)
    r = _search(url, png_bytes(img[0]), k=3)
    assert r.status_code == 200, r.text
    assert len(r.json()["results"]) == 3


def test_health_and_docs(app_url):
    url, _ = app_url
    assert api.get(f"{url}/healthz", timeout=10).json() == {"status": "ok"}
    h = api.get(f"{url}/health", timeout=10).json()
    assert h["status"] == "ok" and h["catalogue"]["size"] >= 400
    assert h["shadow"].endswith("onnx-int8")
    assert api.get(f"{url}/docs", timeout=10).status_code == 200
    spec = api.get(f"{url}/openapi.json", timeout=10).json()
    assert "/search" in spec["paths"] and "/images" in spec["paths"]


def test_search_finds_the_query_itself_first(app_url):
    url, _ = app_url
    imgs, _ = catalogue_images(400)
    r = _search(url, png_bytes(imgs[7]), k=10)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model_version"].endswith(":torch")
    ids = [h["image_id"] for h in body["results"]]
    assert ids[0] == 7 and len(ids) == 10
    scores = [h["score"] for h in body["results"]]
    assert scores == sorted(scores, reverse=True) and scores[0] > 0.99


@pytest.mark.parametrize(
    "name, make, status, needle",
    [
        ("not an image", lambda: b"definitely not an image", 400, "not an image"),
        ("zero bytes", lambda: b"", 400, "empty"),
        (
            "truncated jpeg",
            lambda: jpeg_bytes(np.full((64, 64), 90, np.uint8))[:300],
            400,
            "truncated|corrupt",
        ),
        ("over pixel limit", lambda: png_bytes(np.zeros((2100, 2100), np.uint8)), 413, "pixels"),
        ("huge upload", lambda: b"\xff" * 2_500_000, 413, "over"),
    ],
)
def test_bad_images(app_url, name, make, status, needle):
    url, _ = app_url
    r = _search(url, make())
    assert r.status_code == status, (name, r.status_code, r.text)
    assert pytest.importorskip("re").search(needle, r.json()["detail"]), r.json()
    _still_up(url)


@pytest.mark.parametrize("k", [0, -3, 51, 10**9, "ten"])
def test_bad_k(app_url, k):
    url, _ = app_url
    imgs, _ = catalogue_images(1)
    r = _search(url, png_bytes(imgs[0]), k=k)
    assert r.status_code == 422, r.text
    _still_up(url)


def test_unknown_fields_and_wrong_content_type(app_url):
    url, _ = app_url
    imgs, _ = catalogue_images(1)
    data = png_bytes(imgs[0])
    r = api.post(
        f"{url}/search", files={"image": ("a.png", data), "colour": (None, "red")}, timeout=10
    )
    assert r.status_code == 422 and "colour" in r.json()["detail"]
    r = api.post(
        f"{url}/search",
        params={"k": 3, "sort": "asc"},
        files={"image": ("a.png", data)},
        timeout=10,
    )
    assert r.status_code == 422 and "sort" in r.json()["detail"]
    r = api.post(f"{url}/search", data=data, headers={"content-type": "image/png"}, timeout=10)
    assert r.status_code == 415 and "multipart/form-data" in r.json()["detail"]
    r = api.post(f"{url}/search", json={"image": "base64?"}, timeout=10)
    assert r.status_code == 415
    r = api.post(f"{url}/search", files={"picture": ("a.png", data)}, timeout=10)
    assert r.status_code == 422
    r = api.post(f"{url}/search", files={"image": (None, "just text")}, timeout=10)
    assert r.status_code == 422 and "file upload" in r.json()["detail"]
    _still_up(url)


def _new_image(seed: int) -> bytes:
    rng = np.random.default_rng(1000 + seed)
    return png_bytes((rng.random((28, 28)) * 255).astype(np.uint8))


def _add(url, data, owner=None, private=None, client=api):
    fields = {"image": ("new.png", data)}
    if owner is not None:
        fields["owner"] = (None, owner)
    if private is not None:
        fields["private"] = (None, private)
    return client.post(f"{url}/images", files=fields, timeout=30)


def test_added_image_is_searchable_and_privacy_holds(app_url, keys):
    url, _ = app_url
    alice, bob = as_user(keys["alice"]), as_user(keys["bob"])
    data = _new_image(1)
    r = _add(url, data, private="true", client=alice)  # the owner is alice: her token says so
    assert r.status_code == 200, r.text
    new_id = r.json()["image_id"]
    mine = _search(url, data, k=3, client=alice).json()["results"]
    assert mine[0]["image_id"] == new_id
    theirs = _search(url, data, k=3, client=bob).json()["results"]
    assert new_id not in [h["image_id"] for h in theirs]
    # bob can neither search as alice nor add in her name; an admin may act for her
    assert _search(url, data, user_id="alice", client=bob).status_code == 403
    assert _add(url, data, owner="alice", client=bob).status_code == 403
    as_alice = _search(url, data, k=3, user_id="alice").json()["results"]
    assert as_alice[0]["image_id"] == new_id
    assert new_id not in [h["image_id"] for h in _search(url, data, k=3).json()["results"]]
    assert _add(url, data, owner="x", private="maybe").status_code == 422
    assert _add(url, b"").status_code == 400


def test_concurrent_adds_are_all_searchable(app_url):
    url, _ = app_url
    datas = [_new_image(100 + i) for i in range(16)]
    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda d: _add(url, d, owner="load"), datas))
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses]
    ids = [r.json()["image_id"] for r in responses]
    assert len(set(ids)) == len(ids)
    for d, i in zip(datas, ids, strict=True):
        top = _search(url, d, k=1).json()["results"]
        assert top[0]["image_id"] == i


def test_shadow_report_compares_int8_with_fp32(app_url):
    url, _ = app_url
    imgs, _ = catalogue_images(20)
    for img in imgs:
        assert _search(url, png_bytes(img), k=10).status_code == 200
    deadline = time.time() + 30
    while time.time() < deadline:
        rep = api.get(f"{url}/shadow", timeout=10).json()
        if rep["completed"] >= 20:
            break
        time.sleep(0.5)
    assert rep["enabled"] and rep["comparison"] == "overlap@k"
    assert rep["completed"] >= 20 and rep["errors"] == 0
    assert rep["mean_score"] > 0.5  # int8 mostly agrees with fp32 on the top 10
    assert rep["primary_latency_ms"]["p50"] > 0 and rep["shadow_latency_ms"]["p50"] > 0


def test_drift_report_sees_rotated_uploads(app_url, keys):
    url, _ = app_url
    assert as_user(keys["alice"]).get(f"{url}/drift", timeout=10).status_code == 403
    before = api.get(f"{url}/drift", timeout=10).json()["observed"]
    imgs, _ = catalogue_images(420)
    for img in imgs[400:420]:  # not in the catalogue, rotated a quarter turn
        assert _search(url, png_bytes(np.rot90(img).copy()), k=5).status_code == 200
    deadline = time.time() + 30
    while time.time() < deadline:
        rep = api.get(f"{url}/drift", timeout=30).json()
        if rep["observed"] >= before + 20:
            break
        time.sleep(0.5)
    assert rep["enabled"] and rep["thresholds"]["window"] == 20
    rolling = rep["rolling"]  # the last 20 observations: all rotated
    assert rolling["drifted"] and {"anisotropy", "image"} & set(rolling["moved"]), rolling
    assert rep["windows_judged"] >= 1 and rep["windows"]


def test_added_images_survive_a_restart(app_url, serve_instance):

    url, args = app_url
    data = _new_image(999)
    new_id = _add(url, data, owner="restart").json()["image_id"]
    serve.delete("visual_search")
    serve.run(build_app(args), name="visual_search", route_prefix="/visual-search")
    top = _search(url, data, k=1).json()["results"]
    assert top[0]["image_id"] == new_id


def test_encoder_on_triton_gives_the_same_results(app_url, serve_instance, triton_server):
    """backend: triton (a real Triton server, asyncio gRPC from the replica): the same top-k
    and scores as the in-replica runner, int8 shadow from the same server; a model the server
    does not hold fails the build, naming it."""

    url, args = app_url
    triton = TritonArgs(url=triton_server.grpc_url, protocol="grpc", timeout_s=10)
    targs = args.model_copy(
        update={
            "model": args.model.model_copy(update={"backend": "triton"}),
            "shadow": args.shadow.model_copy(update={"backend": "triton-int8"}),
            "triton": triton,
        }
    )
    with pytest.raises(ValueError, match="no triton"):
        build_app(targs.model_copy(update={"triton": None}))
    serve.run(
        build_app(VisualSearchArgs(**targs.model_dump())),
        name="vs_triton",
        route_prefix="/vs-triton",
    )
    try:
        turl = f"{serve_instance}/vs-triton"
        imgs, _ = catalogue_images(30)
        for img in imgs[:10]:
            a, b = _search(url, png_bytes(img), k=10), _search(turl, png_bytes(img), k=10)
            assert a.status_code == b.status_code == 200, b.text
            assert b.json()["model_version"].endswith(":triton")
            ha, hb = a.json()["results"], b.json()["results"]
            sa = np.array([h["score"] for h in ha])
            np.testing.assert_allclose(sa, [h["score"] for h in hb], atol=1e-4)
            gap = np.diff(sa, prepend=np.inf, append=-np.inf)  # ties may swap, nothing else
            clear = (np.abs(gap[:-1]) > 1e-4) & (np.abs(gap[1:]) > 1e-4)
            assert [h["image_id"] for h, c in zip(ha, clear, strict=True) if c] == [
                h["image_id"] for h, c in zip(hb, clear, strict=True) if c
            ]
        rep = api.get(f"{turl}/shadow", timeout=10).json()
        assert rep["enabled"] and rep["shadow"]["model_version"].endswith(":triton-int8")
    finally:
        serve.delete("vs_triton")


def test_get_and_delete_an_image(app_url, keys, serve_instance):
    """GET /images/{id} (the upload, or a thumbnail; private ones only to their owner, 404 as
    for an id that never existed), DELETE (owner or admin; twice -> 404), then the image is in
    no search, not even after a restart; search hits carry the URL to fetch each image."""

    url, args = app_url
    alice, bob, reader = (as_user(keys[u]) for u in ("alice", "bob", "reader"))
    data = _new_image(4242)
    new_id = _add(url, data, private="true", client=alice).json()["image_id"]
    hit = _search(url, data, k=1, client=alice).json()["results"][0]
    assert hit["image_id"] == new_id and hit["url"] == f"/visual-search/images/{new_id}"
    r = alice.get(f"{serve_instance}{hit['url']}", timeout=10)
    assert r.status_code == 200 and r.content == data and r.headers["content-type"] == "image/png"
    thumb = alice.get(f"{url}/images/{new_id}", params={"size": 16}, timeout=10)
    assert thumb.status_code == 200 and thumb.content[:4] == b"\x89PNG"
    never = api.get(f"{url}/images/{new_id + 1}", timeout=10)
    hidden = bob.get(f"{url}/images/{new_id}", timeout=10)  # private to alice
    assert never.status_code == hidden.status_code == 404 and never.json() == hidden.json()
    catalogue = reader.get(f"{url}/images/7", params={"size": 64}, timeout=10)
    assert catalogue.status_code == 200 and catalogue.headers["content-type"] == "image/png"
    for bad in ("abc", "-1", str(2**60)):
        assert api.get(f"{url}/images/{bad}", timeout=10).status_code == 422
        assert api.delete(f"{url}/images/{bad}", timeout=10).status_code == 422
    assert api.get(f"{url}/images/7", params={"size": 2}, timeout=10).status_code == 422
    assert api.get(f"{url}/images/7", params={"x": 1}, timeout=10).status_code == 422

    public = _add(url, _new_image(4343), client=alice).json()["image_id"]
    assert bob.delete(f"{url}/images/{public}", timeout=10).status_code == 403  # not his
    assert bob.delete(f"{url}/images/{new_id}", timeout=10).status_code == 404  # unseen by him
    assert reader.delete(f"{url}/images/{public}", timeout=10).status_code == 403  # no write
    assert alice.delete(f"{url}/images/7", timeout=10).status_code == 403  # the catalogue's
    r = alice.delete(f"{url}/images/{new_id}", timeout=10)
    assert r.status_code == 200 and r.json() == {"id": new_id, "deleted": True}
    assert alice.delete(f"{url}/images/{new_id}", timeout=10).status_code == 404  # twice
    assert alice.get(f"{url}/images/{new_id}", timeout=10).status_code == 404
    assert api.delete(f"{url}/images/{public}", timeout=10).status_code == 200  # an admin
    for q, gone in ((data, new_id), (_new_image(4343), public)):
        found = [h["image_id"] for h in _search(url, q, k=10, client=alice).json()["results"]]
        assert gone not in found
    serve.delete("visual_search")
    serve.run(build_app(args), name="visual_search", route_prefix="/visual-search")
    found = [h["image_id"] for h in _search(url, data, k=10, client=alice).json()["results"]]
    assert new_id not in found
    assert alice.get(f"{url}/images/{new_id}", timeout=10).status_code == 404
    _still_up(url)
