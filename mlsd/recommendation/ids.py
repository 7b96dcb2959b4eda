"""A platform's own user and video ids at the API, the model's dense ids inside.

A log read through :mod:`mlsd.recommendation.data` keeps integer ids as they are when they are
dense enough to index tables by; other ids (strings, or integers too sparse for that) are
numbered 1..n and the map goes into the artifact (``id_maps.json``). Serving takes the
platform's ids and answers with them.

The event log must outlive a model: the next training run numbers ids afresh, and replicas on
other nodes must agree on an id without asking each other. So for a mapped kind the log keeps
:func:`log_id` of the platform's id, a stable 62-bit hash, whether or not the serving model
knows it; integer deployments log the id itself. The hashes live in ``[2**62, 2**63)``, apart
from every integer id the API takes; two of a million ids collide with odds of about 1e-7.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

HASH_BASE = 2**62
MAX_INT_ID = 2**31 - 1  # the largest id an integer (unmapped) deployment takes
MAX_KEY_CHARS = 128
KINDS = ("user_id", "item_id")


class UnknownIdForm(ValueError):
    """An id this deployment cannot read (a string where the model's ids are integers, an
    integer out of range, an over-long key): the API's 422."""


def log_id(key: str) -> int:
    """A platform's id -> the same integer on every replica, node and training run."""
    digest = hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest()
    return HASH_BASE + int.from_bytes(digest, "big") % HASH_BASE


def key_of(value: int | str) -> str:
    """An id as the client sent it (a JSON integer or string) -> its key: ``42`` and ``"42"``
    are the same id."""
    key = str(value).strip() if isinstance(value, str) else str(int(value))
    if not key or len(key) > MAX_KEY_CHARS or any(ord(ch) < 32 or ch == "/" for ch in key):
        raise UnknownIdForm(
            f"an id is 1..{MAX_KEY_CHARS} characters without '/' or control characters"
        )
    return key


class ParsedId(NamedTuple):
    key: str  # the platform's id, canonical (an integer without leading zeros)
    model: int  # the model's id; -1: the model does not know it
    log: int  # the id the event log keeps (the same whatever model serves)


@dataclass
class IdMap:
    """One kind's ids (users or videos): the platform's id <-> the model's dense id.
    ``ids`` None: the platform's ids are the model's (integers, as MovieLens's)."""

    ids: dict[str, int] | None = None
    integer: bool = True  # the platform's ids are integers (answers give them as JSON numbers)
    _back: dict[int, str] = field(default_factory=dict, repr=False)
    _from_log: dict[int, int] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.ids is not None:
            self._back = {v: k for k, v in self.ids.items()}
            self._from_log = {log_id(k): v for k, v in self.ids.items()}

    @property
    def mapped(self) -> bool:
        return self.ids is not None

    def parse(self, value: int | str) -> ParsedId:
        """An id from a request -> :class:`ParsedId`; :class:`UnknownIdForm` for an id this
        deployment cannot read."""
        key = key_of(value)
        if self.integer:
            if not key.isdigit():
                raise UnknownIdForm(f"ids here are non-negative integers; got {key[:40]!r}")
            key = str(int(key))  # "007" is 7
        if self.ids is None:
            if int(key) > MAX_INT_ID:
                raise UnknownIdForm(f"ids here are integers 0..{MAX_INT_ID}; got {key[:40]}")
            return ParsedId(key, int(key), int(key))
        return ParsedId(key, self.ids.get(key, -1), log_id(key))

    def public(self, model_id: int) -> int | str:
        """The model's id -> the platform's (as the client sent it: a number or a string)."""
        return self.answer(str(int(model_id)) if self.ids is None else self._back[int(model_id)])

    def answer(self, key: str) -> int | str:
        """A platform's id (a parsed key) as answers give it: a number or a string."""
        return int(key) if self.integer else key

    def model_ids_of_log(self, logged) -> np.ndarray:
        """(n,) ids as the event log keeps them -> (n,) the model's ids (-1: not in it)."""
        logged = np.asarray(logged, np.int64)
        if self.ids is None:
            return logged
        get = self._from_log.get
        return np.fromiter((get(int(i), -1) for i in logged), np.int64, len(logged))


@dataclass
class PlatformIds:
    """Users' and videos' id maps of one artifact."""

    users: IdMap = field(default_factory=IdMap)
    videos: IdMap = field(default_factory=IdMap)

    @classmethod
    def from_json(cls, text: str | bytes | None) -> PlatformIds:
        """``id_maps.json`` (absent: integer ids throughout). Each kind is
        ``{"type": "str" | "int", "ids": {platform id: model id}}``; a bare
        ``{platform id: model id}`` (the first artifacts' form) is a string map."""
        if not text:
            return cls()
        raw = json.loads(text)
        maps, integer = {}, {}
        for kind in KINDS:
            m = raw.get(kind)
            if m is not None and "ids" in m and isinstance(m["ids"], dict):
                maps[kind], integer[kind] = m["ids"], m.get("type") == "int"
            elif m is not None:
                maps[kind], integer[kind] = m, False
        return cls.from_maps(maps, integer)

    @classmethod
    def from_maps(cls, maps: dict[str, dict], integer: dict[str, bool]) -> PlatformIds:
        """The maps of the kinds that were numbered (platform id -> model id) and, per kind,
        whether the platform's ids are integers; a kind without a map keeps its ids."""
        kinds = {
            k: IdMap({str(key): int(v) for key, v in maps[k].items()}, bool(integer.get(k)))
            if k in maps
            else IdMap()
            for k in KINDS
        }
        return cls(kinds["user_id"], kinds["item_id"])


def id_maps_json(maps: dict[str, dict[str, int]], integer: dict[str, bool]) -> bytes:
    """The artifact's ``id_maps.json`` for the kinds that were numbered."""
    return json.dumps(
        {k: {"type": "int" if integer.get(k) else "str", "ids": m} for k, m in maps.items()}
    ).encode()
