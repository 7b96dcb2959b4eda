"""Which URIs a service may read: judged by structure, never by string prefix.

A raw ``startswith`` admits ``file:///allowed/../x`` (a path that leaves the allowed folder)
and, for a prefix ``s3://bucket``, ``s3://bucket-evil/...``. Here a URI and each allowed prefix
are split into scheme, authority (the bucket or host) and path segments; a URI is allowed when
the scheme and authority are equal and the prefix's segments begin the URI's. Anything that
could be read two ways is refused outright: ``..`` or ``.`` segments, empty segments,
percent-escapes, backslashes, ``::``, query strings, fragments, control characters.

:func:`read_capped` is the one reader of the bytes behind an allowed URI: never more than its
cap is read, and a missing object and an unreadable one give the same answer (a caller cannot
probe which keys exist).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

import fsspec

log = logging.getLogger(__name__)
MAX_URI_CHARS = 2048


class UnsafeURI(ValueError):
    """A URI that is malformed or ambiguous; the message says why (safe to show the caller)."""


class URIReadError(Exception):
    """The bytes behind a URI could not be had: ``reason`` is ``unreadable`` (missing, refused,
    failing: one answer for all) or ``too_large`` (over the cap); the message is safe to show."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class ParsedURI:
    scheme: str
    authority: str
    segments: tuple[str, ...]


def parse_uri(uri: str) -> ParsedURI:
    """Split a URI (or a plain absolute path, read as ``file``) or raise :class:`UnsafeURI`."""
    if not isinstance(uri, str) or not uri or len(uri) > MAX_URI_CHARS:
        raise UnsafeURI("a URI must be a non-empty string of at most 2048 characters")
    if any(ord(c) < 32 or ord(c) == 127 for c in uri):
        raise UnsafeURI("control characters in the URI")
    for bad, why in (("%", "percent-escapes"), ("\\", "backslashes"), ("::", "'::'")):
        if bad in uri:
            raise UnsafeURI(f"{why} are not accepted in a URI")
    parts = urlsplit(uri if "://" in uri else f"file://{uri}" if uri.startswith("/") else uri)
    if not parts.scheme or "://" not in uri and not uri.startswith("/"):
        raise UnsafeURI("a URI needs a scheme (s3://, gs://, file://) or an absolute path")
    if parts.query or parts.fragment or "?" in uri or "#" in uri:
        raise UnsafeURI("query strings and fragments are not accepted in a URI")
    scheme = parts.scheme.lower()
    authority = parts.netloc
    if scheme == "file" and authority not in ("", "localhost"):
        raise UnsafeURI("a file URI names no host")
    if scheme == "file":
        authority = ""
    path = parts.path
    if scheme == "file" and not path.startswith("/"):
        raise UnsafeURI("a file URI needs an absolute path")
    segments = tuple(path.strip("/").split("/")) if path.strip("/") else ()
    if any(s in ("", ".", "..") for s in segments):
        raise UnsafeURI("'.', '..' and empty path segments are not accepted in a URI")
    return ParsedURI(scheme, authority, segments)


def uri_allowed(uri: str, prefixes: Iterable[str]) -> bool:
    """True when ``uri`` lies under one of ``prefixes`` segment by segment; raises
    :class:`UnsafeURI` for a malformed or ambiguous ``uri``."""
    target = parse_uri(uri)
    for prefix in prefixes:
        try:
            allowed = parse_uri(prefix)
        except UnsafeURI:
            continue  # a broken configured prefix admits nothing
        if (
            (allowed.scheme, allowed.authority) == (target.scheme, target.authority)
            and len(allowed.segments) <= len(target.segments)
            and target.segments[: len(allowed.segments)] == allowed.segments
        ):
            return True
    return False


def read_capped(uri: str, max_bytes: int) -> bytes:
    """The bytes behind an fsspec URI, reading at most ``max_bytes + 1`` of them; a
    :class:`URIReadError` when they cannot be read or are more than ``max_bytes``."""
    try:
        with fsspec.open(uri, "rb") as f:
            data = f.read(max_bytes + 1)
    except (OSError, ValueError):  # the same answer whether the key exists or not
        log.warning("cannot read %s", uri, exc_info=True)
        raise URIReadError("unreadable", "the URI cannot be read") from None
    if len(data) > max_bytes:
        raise URIReadError("too_large", f"over {max_bytes} bytes")
    return data
