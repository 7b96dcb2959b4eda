"""What one request may cost, without Ray: the ASGI body cap (chunked bodies too)."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from apps import limits

MiB = 1024 * 1024


def _app(cap: int) -> FastAPI:
    api = FastAPI(title=f"limits-{cap}")
    limits.install(api, cap)

    @api.post("/upload")
    async def upload(request: Request):
        form = await request.form()
        return {"fields": len(form)}

    @api.post("/json")
    async def as_json(request: Request):
        return {"n": len(await request.json())}

    return api


def _call(api, path: str, chunks, headers=()):
    """Drive the ASGI app with a body that streams lazily; count what the app pulled."""
    pulled = {"bytes": 0}
    it = iter(chunks)

    async def receive():
        try:
            chunk = next(it)
        except StopIteration:
            return {"type": "http.request", "body": b"", "more_body": False}
        pulled["bytes"] += len(chunk)
        return {"type": "http.request", "body": chunk, "more_body": True}

    sent = []

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "scheme": "http",
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 5000),
        "headers": [(k.encode(), v.encode()) for k, v in headers],
    }
    asyncio.run(api(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], json.loads(body or b"{}"), pulled["bytes"]


def _multipart(total: int, chunk: int = 64 * 1024):
    yield b'--b\r\nContent-Disposition: form-data; name="video"; filename="v.mp4"\r\n\r\n'
    for _ in range(total // chunk):
        yield b"\0" * chunk


def test_a_chunked_upload_over_the_cap_is_413_with_no_more_than_the_cap_read():
    cap = 2 * MiB
    status, body, pulled = _call(
        _app(cap),
        "/upload",
        _multipart(50 * MiB),
        headers=[("content-type", "multipart/form-data; boundary=b")],  # no Content-Length
    )
    assert status == 413 and "over" in body["detail"]
    assert pulled <= cap + 64 * 1024  # one chunk past the cap at most, not 50 MiB


def test_a_declared_length_over_the_cap_is_refused_before_reading():
    status, _, pulled = _call(
        _app(MiB),
        "/upload",
        _multipart(10 * MiB),
        headers=[
            ("content-type", "multipart/form-data; boundary=b"),
            ("content-length", str(10 * MiB)),
        ],
    )
    assert status == 413 and pulled == 0


def test_json_bodies_are_capped_too_and_small_ones_pass():
    api = _app(1024)
    status, _, _ = _call(
        api, "/json", [b"[" + b"1," * 5000 + b"1]"], [("content-type", "application/json")]
    )
    assert status == 413
    status, body, _ = _call(api, "/json", [b"[1, 2, 3]"], [("content-type", "application/json")])
    assert status == 200 and body == {"n": 3}


def test_an_unexpected_error_is_a_generic_500():
    api = FastAPI(title="limits-500")
    limits.install(api, 1024)

    @api.post("/boom")
    async def boom():
        raise RuntimeError("/secret/path/to/model.onnx is missing")

    r = TestClient(api, raise_server_exceptions=False).post("/boom")
    assert r.status_code == 500 and r.json() == {"detail": "internal error"}
    assert "secret" not in r.text


def test_the_proxy_caps_each_route_by_its_longest_prefix():
    lim = limits.parse_proxy_limits("default=100,/visual-search=10,/visual-search/images=20")
    assert limits.proxy_limit(lim, "/visual-search/search") == 10
    assert limits.proxy_limit(lim, "/visual-search/images") == 20
    assert limits.proxy_limit(lim, "/visual-searching") == 100  # a prefix is a path segment
    assert limits.proxy_limit(lim, "/video-search/videos") == 100
    assert limits.parse_proxy_limits("")["default"] == limits.DEFAULT_PROXY_LIMIT
    for bad in ("visual=3", "/x=ten", "/x"):
        with pytest.raises(ValueError, match="MLSD_PROXY_BODY_LIMITS"):
            limits.parse_proxy_limits(bad)
    (middleware,) = limits.proxy_middlewares()
    assert middleware.cls is limits.BodyLimit


def test_the_grafana_dashboard_reads_metrics_the_code_exports():
    """Every mlsd_* metric a panel queries is one deployments/metrics.py records."""

    root = Path(__file__).resolve().parents[3]
    dash = json.loads((root / "ops" / "grafana" / "mlsd.json").read_text())
    code = (root / "deployments" / "metrics.py").read_text()
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    used = {m for e in exprs for m in re.findall(r"ray_(mlsd_[a-z_]+?)(?:_total|_bucket)?\b", e)}
    assert used and all(f'"{m}"' in code for m in used), used
    assert len({p["id"] for p in dash["panels"]}) == len(dash["panels"])
