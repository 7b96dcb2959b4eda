"""What one request may cost, enforced the same way in every app.

- :class:`BodyLimit`: ASGI middleware that counts the request body as it streams in
  (``Content-Length`` or chunked) and answers 413 at the cap; the app never reads a byte past
  it, so nothing beyond the cap is buffered or spilled to disk.
- :func:`proxy_middlewares`: the same cap in Serve's HTTP proxy, per route prefix
  (``RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH=apps.limits:proxy_middlewares``, limits from
  ``$MLSD_PROXY_BODY_LIMITS``): the proxy otherwise drains a whole body into memory before the
  replica has answered.
- :func:`install`: the middleware plus exception handlers: a full downstream queue
  (Serve's ``max_queued_requests``) becomes 503 + Retry-After, and an unexpected error becomes
  a generic 500 whose details go to the replica's log, never to the client; every 4xx is
  counted by reason (``mlsd_rejected_inputs``).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler, request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from ray.serve.exceptions import BackPressureError
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware

from deployments import metrics
from mlsd.state import StateError

logger = logging.getLogger("ray.serve")

MULTIPART_SLACK = 64 * 1024  # boundaries and form fields around the uploaded file

# What an ingress's ``__init__`` set for its app in this process, by app title: Serve runs a
# frozen copy of the FastAPI object, so settings cannot hang on the module's ``api`` itself.
EDGE: dict[str, dict] = {}


def edge(title: str, key: str, default=None):
    return EDGE.get(title, {}).get(key, default)


class BodyLimit:
    """Cap the request body at ``max_bytes(scope)`` bytes (asked per request, so an ingress
    can set it from its args after the app object exists, and the proxy per route)."""

    def __init__(self, app, max_bytes: Callable[[dict], int]):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        cap = int(self.max_bytes(scope))
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                return await _send_error(send, 400, "invalid Content-Length header")
            if declared > cap:
                return await _send_error(send, 413, f"request body is over {cap} bytes")
        state = {"read": 0, "over": False, "started": False}

        async def limited_receive():
            if state["over"]:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                state["read"] += len(message.get("body", b""))
                if state["read"] > cap:
                    state["over"] = True  # the app sees a disconnect; we answer 413
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message):
            if state["over"] and not state["started"]:
                return  # whatever the app says about the cut body, the answer is 413
            if message["type"] == "http.response.start":
                state["started"] = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not state["over"]:
                raise
        if state["over"] and not state["started"]:
            await _send_error(send, 413, f"request body is over {cap} bytes")


async def _send_error(send, status: int, detail: str) -> None:

    metrics.rejected(status)
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def install(api: FastAPI, default_max_body: int) -> None:
    """Body cap + 503 on back-pressure + generic 500s, once per app object.

    The cap is the ``max_body_bytes`` its ingress registered in :data:`EDGE`, else the default.
    """

    title = api.title
    api.add_middleware(
        BodyLimit, max_bytes=lambda scope: edge(title, "max_body_bytes", default_max_body)
    )

    @api.exception_handler(HTTPException)
    async def counted(request: Request, exc: HTTPException):
        metrics.rejected(exc.status_code)  # rejected inputs, by reason
        return await http_exception_handler(request, exc)

    @api.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        metrics.rejected(422)
        return await request_validation_exception_handler(request, exc)

    @api.exception_handler(StateError)
    async def state_down(request: Request, exc: StateError) -> JSONResponse:
        logger.error("state store error in %s %s: %s", request.method, request.url.path, exc)
        metrics.rejected(503)
        return JSONResponse(
            {"detail": "a state store is unavailable; retry shortly"},
            status_code=503,
            headers={"Retry-After": "5"},
        )

    @api.exception_handler(BackPressureError)
    async def overloaded(request: Request, exc: BackPressureError) -> JSONResponse:
        metrics.rejected(503)
        return JSONResponse(
            {"detail": "the service is at capacity; retry shortly"},
            status_code=503,
            headers={"Retry-After": "1"},
        )

    @api.exception_handler(Exception)
    async def internal(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error in %s %s", request.method, request.url.path)
        return JSONResponse({"detail": "internal error"}, status_code=500)


DEFAULT_PROXY_LIMIT = 64 * 1024 * 1024 + MULTIPART_SLACK  # the largest app cap (video uploads)


def parse_proxy_limits(spec: str) -> dict[str, int]:
    """``"default=67174400,/visual-search=21037056,/recommendations=65536"`` -> caps by route
    prefix (``default`` for any other path)."""
    limits = {"default": DEFAULT_PROXY_LIMIT}
    for item in filter(None, (p.strip() for p in spec.split(","))):
        prefix, _, value = item.partition("=")
        if not value.isdigit() or not (prefix == "default" or prefix.startswith("/")):
            raise ValueError(f"bad MLSD_PROXY_BODY_LIMITS entry {item!r} (want /prefix=bytes)")
        limits[prefix] = int(value)
    return limits


def proxy_limit(limits: dict[str, int], path: str) -> int:
    """The cap of the longest route prefix that ``path`` is under."""
    best, cap = "", limits["default"]
    for prefix, value in limits.items():
        if prefix == "default":
            continue
        under = path == prefix or path.startswith(prefix.rstrip("/") + "/")
        if under and len(prefix) > len(best):
            best, cap = prefix, value
    return cap


def proxy_middlewares() -> list:
    """Serve's proxy callback: the body cap where the bytes arrive, before any replica."""

    limits = parse_proxy_limits(os.environ.get("MLSD_PROXY_BODY_LIMITS", ""))
    return [
        Middleware(BodyLimit, max_bytes=lambda scope: proxy_limit(limits, scope.get("path", "")))
    ]
