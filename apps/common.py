"""HTTP helpers every app shares: strict multipart parsing and clear 4xx errors."""

from __future__ import annotations

import os
from collections.abc import Iterable

from fastapi import HTTPException, Request
from starlette.datastructures import FormData, UploadFile
from starlette.formparsers import MultiPartException


def pin_local(path: str | None) -> str | None:
    """Replicas may start in another working directory: make local paths absolute now
    (URIs and None pass through)."""
    if path is None or "://" in path:
        return path
    return os.path.abspath(path)


async def shadow_report(comparator, shadow_args) -> dict:
    """The body of an app's ``GET /shadow``: the comparator's aggregate, or disabled."""
    if comparator is None:
        return {"enabled": False}
    report = await comparator.report.remote()
    return {"enabled": True, "shadow": shadow_args.model_dump(), **report}


def multipart_openapi(properties: dict, required: list[str]) -> dict:
    """``openapi_extra`` documenting a multipart body that a route parses by hand."""
    schema = {"type": "object", "required": required, "properties": properties}
    return {
        "requestBody": {"content": {"multipart/form-data": {"schema": schema}}, "required": True}
    }


def reject_unknown_query(request: Request, allowed: Iterable[str]) -> None:
    unknown = sorted(set(request.query_params) - set(allowed))
    if unknown:
        raise HTTPException(422, f"unknown query parameter(s): {', '.join(unknown)}")


async def read_multipart(
    request: Request,
    allowed: set[str],
    max_bytes: int,
    required: Iterable[str] = (),
) -> FormData:
    """Parse a multipart body strictly: right content type, size cap, no unknown fields."""
    ctype = request.headers.get("content-type", "")
    if not ctype.lower().startswith("multipart/form-data"):
        raise HTTPException(415, f"expected multipart/form-data, got {ctype or 'no content type'}")
    length = request.headers.get("content-length")
    if length is not None:
        try:
            too_big = int(length) > max_bytes + 64 * 1024
        except ValueError:
            raise HTTPException(400, "invalid Content-Length header") from None
        if too_big:
            raise HTTPException(413, f"request body of {length} bytes is over {max_bytes} bytes")
    try:
        form = await request.form(max_files=len(allowed), max_fields=len(allowed))
    except MultiPartException as e:
        raise HTTPException(400, f"malformed multipart body: {e.message}") from None
    unknown = sorted(set(form.keys()) - allowed)
    if unknown:
        raise HTTPException(422, f"unknown form field(s): {', '.join(unknown)}")
    missing = [f for f in required if f not in form]
    if missing:
        raise HTTPException(422, f"missing form field(s): {', '.join(missing)}")
    return form


async def read_upload(form: FormData, field: str, max_bytes: int) -> bytes:
    value = form.get(field)
    if not isinstance(value, UploadFile):
        raise HTTPException(422, f"form field {field!r} must be a file upload")
    data = await value.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise HTTPException(413, f"upload {field!r} is over the limit of {max_bytes} bytes")
    return data


def parse_bool(value: str | None, field: str) -> bool:
    if value is None or value == "":
        return False
    v = str(value).strip().lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off"):
        return False
    raise HTTPException(422, f"form field {field!r} must be true or false, got {value!r}")
