"""The security review's attacks over real HTTP: identity, scopes, body caps, back-pressure."""

from __future__ import annotations

import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from ray import serve
from ray.serve.context import _get_global_client
from ray.serve.schema import ServeDeploySchema

from apps.auth import serve_hosts
from apps.recommendation import RecommendationArgs
from apps.recommendation import build_app as rec_app
from apps.visual_search import VisualSearchArgs
from apps.visual_search import build_app as vs_app
from tests.conftest import ROOT, catalogue_images, new_objects, new_store, png_bytes
from tests.serve.http import api, as_user

pytestmark = [pytest.mark.serve, pytest.mark.slow]

CAP = 1_000_000


@pytest.fixture(scope="module")
def apps_url(serve_instance, tiny_store, rec_store, tmp_path_factory):

    tmp = tmp_path_factory.mktemp("sec")
    vs = VisualSearchArgs(
        artifact_store=str(tiny_store),
        live_log=new_store(tmp / "live.sqlite"),
        object_store=new_objects(tmp / "objects"),
        max_upload_bytes=CAP,
    )
    rec = RecommendationArgs(artifact_store=str(rec_store), events_log=new_store(tmp / "ev.db"))
    serve.run(vs_app(vs), name="sec_vs", route_prefix="/sec-vs")
    serve.run(rec_app(rec), name="sec_rec", route_prefix="/sec-rec")
    yield f"{serve_instance}/sec-vs", f"{serve_instance}/sec-rec"
    serve.delete("sec_vs")
    serve.delete("sec_rec")


def _image() -> bytes:
    return png_bytes(catalogue_images(1)[0][0])


def test_every_route_but_liveness_needs_a_token(apps_url):
    vs, rec = apps_url
    anon = requests.Session()
    calls = [
        ("post", f"{vs}/search", {"files": {"image": ("q.png", _image())}}),
        ("post", f"{vs}/images", {"files": {"image": ("q.png", _image())}}),
        ("get", f"{vs}/health", {}),
        ("get", f"{vs}/shadow", {}),
        ("get", f"{rec}/users/1", {}),
        (
            "post",
            f"{rec}/events",
            {"json": {"user_id": 1, "video_id": 1, "event": "watch", "timestamp": 1}},
        ),
        ("get", f"{rec}/health", {}),
    ]
    for method, url, kw in calls:
        r = getattr(anon, method)(url, timeout=30, **kw)
        assert r.status_code == 401, (url, r.status_code, r.text)
        assert r.headers.get("www-authenticate") == "Bearer"
        bad = getattr(as_user("mlsd_0123456789abcdef_" + "x" * 43), method)(url, timeout=30, **kw)
        assert bad.status_code == 401, url
    for url in (vs, rec):  # liveness is open and says nothing about the data
        assert anon.get(f"{url}/healthz", timeout=30).json() == {"status": "ok"}
    spec = anon.get(f"{vs}/openapi.json", timeout=30).json()
    assert "HTTPBearer" in spec["components"]["securitySchemes"]


def test_scopes_and_acting_for_others(apps_url, keys):
    vs, rec = apps_url
    reader, alice, me = as_user(keys["reader"]), as_user(keys["alice"]), as_user(keys["42"])
    assert reader.post(f"{vs}/search", files={"image": ("q.png", _image())}, timeout=30).ok
    r = reader.post(f"{vs}/images", files={"image": ("q.png", _image())}, timeout=30)
    assert r.status_code == 403 and "write" in r.json()["detail"]
    for url in (f"{vs}/health", f"{vs}/shadow", f"{rec}/health", f"{rec}/shadow"):
        assert alice.get(url, timeout=30).status_code == 403, url
        assert api.get(url, timeout=30).status_code == 200, url  # admin
    event = {"user_id": 42, "video_id": 1, "event": "watch", "timestamp": 1_700_000_000}
    assert me.post(f"{rec}/events", json=event, timeout=30).status_code == 201
    other = alice.post(f"{rec}/events", json=event, timeout=30)  # user 42's history: not hers
    assert other.status_code == 403 and "admin" in other.json()["detail"]
    assert alice.get(f"{rec}/users/42", timeout=30).status_code == 403
    assert me.get(f"{rec}/users/42", timeout=30).status_code == 200
    assert api.post(f"{rec}/events", json=event, timeout=30).status_code == 201  # admin


def test_keys_from_the_cli_apply_without_a_restart(apps_url, keys):
    vs, _ = apps_url

    def cli(*args: str) -> str:
        out = subprocess.run(
            [sys.executable, "-m", "apps.auth", "--store", keys["store"], *args],
            cwd=ROOT,
            check=True,
            capture_output=True,
            text=True,
        )
        return out.stdout.strip()

    token = cli("create", "--user", "carol", "--scopes", "search")
    carol = as_user(token)
    assert carol.post(f"{vs}/search", files={"image": ("q.png", _image())}, timeout=30).ok
    assert "carol" in cli("list")
    cli("revoke", token.split("_")[1])
    r = carol.post(f"{vs}/search", files={"image": ("q.png", _image())}, timeout=30)
    assert r.status_code == 401


def _kernel_socket_buffers() -> int:
    """Most bytes the kernel may hold between client and server on loopback: the client's send
    buffer plus the server's receive buffer, each at its autotuning ceiling."""
    total = 0
    for name, default in (("tcp_wmem", 4 << 20), ("tcp_rmem", 6 << 20)):
        try:
            total += int(Path(f"/proc/sys/net/ipv4/{name}").read_text().split()[2])
        except (OSError, IndexError, ValueError):
            total += default
    return total


def test_a_chunked_50_mib_upload_is_413_and_read_no_further_than_the_cap(apps_url):
    vs, _ = apps_url
    cap = 1_100_000  # MLSD_PROXY_BODY_LIMITS for /sec-vs in this suite (conftest)
    buffered = _kernel_socket_buffers()
    # the upload is larger than what the cap plus every kernel buffer can absorb, so a server
    # that read the whole body would let all of it leave the client
    chunks = max(50 << 20, cap + buffered + (16 << 20)) // 65536
    sent = {"bytes": 0}

    def body():
        yield b'--b\r\nContent-Disposition: form-data; name="image"; filename="x.png"\r\n\r\n'
        for _ in range(chunks):  # 64 KiB chunks, no Content-Length
            sent["bytes"] += 65536
            yield b"\0" * 65536

    try:
        r = api.post(
            f"{vs}/search",
            data=body(),
            headers={"content-type": "multipart/form-data; boundary=b"},
            timeout=60,
        )
        assert r.status_code == 413, r.text
    except requests.ConnectionError:
        pass  # the server answered 413 and closed while the client was still sending
    # the proxy stops reading at its cap for this route: what left the client beyond it sat in
    # kernel socket buffers (their ceiling read from /proc), not in the server's memory
    assert sent["bytes"] < chunks * 65536, sent
    assert sent["bytes"] <= cap + buffered + (1 << 20), (sent, cap, buffered)
    assert api.post(f"{vs}/search", files={"image": ("q.png", _image())}, timeout=30).ok


def test_a_full_queue_is_503_and_the_service_stays_up(serve_instance, tiny_store):
    """The encoder hangs with one request running and one queued: the next is refused at once
    with 503 (Serve's max_queued_requests), and the ingress keeps answering."""

    name = "sec_queue"
    app = {
        "name": name,
        "route_prefix": "/sec-queue",
        "import_path": "apps.visual_search:build_app",
        "args": {
            "artifact_store": str(tiny_store),
            "live_log": None,
            "encoder_placement": "deployment",  # its own replica, to hang
            "fault_injection": {"ImageEncoder": "hang"},
        },
        "deployments": [
            {"name": "ImageEncoder", "max_ongoing_requests": 1, "max_queued_requests": 1}
        ],
    }
    _get_global_client().deploy_apps(ServeDeploySchema(applications=[app]), _blocking=True)
    url = f"{serve_instance}/sec-queue"
    try:
        deadline = time.time() + 120
        while api.get(f"{url}/healthz", timeout=10).status_code != 200:
            assert time.time() < deadline
            time.sleep(1)

        def search(_):
            try:
                files = {"image": ("q.png", _image())}
                return api.post(f"{url}/search", files=files, timeout=8).status_code
            except requests.Timeout:
                return "timeout"  # held by the hanging encoder

        with ThreadPoolExecutor(6) as pool:
            codes = list(pool.map(search, range(6)))
        assert 503 in codes, codes
        assert api.get(f"{url}/healthz", timeout=10).status_code == 200
    finally:
        serve.delete(name)


def test_the_build_reads_the_running_serve_bind_address(serve_instance):

    assert serve_hosts() == ["127.0.0.1"]  # what `auth: none` is judged by
