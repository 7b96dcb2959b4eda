"""Stored uploads and per-user history are bounded; health counters never scan."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
from sqlalchemy import func, select

from mlsd.recommendation.events import EventLog
from mlsd.state.schema import rec_events
from mlsd.visual_search.catalogue import CatalogueLog, QuotaExceeded


def _files(root: str) -> list[str]:
    return [f for _, _, fs in os.walk(root) for f in fs]


def test_one_owner_cannot_fill_the_catalogue(state_url, objects):
    log = CatalogueLog(state_url, objects, max_per_owner=3)
    for _ in range(3):
        log.append(np.ones(4), "m", owner="mallory", image=b"x")
    with pytest.raises(QuotaExceeded, match="mallory"):
        log.append(np.ones(4), "m", owner="mallory", image=b"x")
    assert len(_files(objects)) == 3  # the refused upload's bytes were never kept
    log.append(np.ones(4), "m", owner="alice", image=b"x")  # others are not affected


def test_uploaded_bytes_expire_but_stay_searchable(state_url, objects):
    log = CatalogueLog(state_url, objects, retention_s=3600)
    i = log.append(np.ones(4), "m", owner="a", image=b"raw")
    assert log.image_bytes(i) == b"raw" and len(_files(objects)) == 1
    assert log.prune(now=time.time() + 7200) == 1
    assert log.image_bytes(i) is None
    assert _files(objects) == []  # the bytes themselves are gone from the object store
    assert [m.meta.image_id for _, m in log.since(0)] == [i]  # the embedding stays


def test_history_read_is_bounded_and_counters_match_a_scan(state_url):
    log = EventLog(state_url)
    for t in range(50):
        log.append(7, t, "watch", t, unknown_video=t % 5 == 0)
    log.append(8, 1, "click", 1, unknown_user=True)
    items, _ = log.for_user(7, limit=10)
    assert items.tolist() == list(range(40, 50))  # the newest, oldest first
    assert log.flagged() == {"events": 51, "unknown_user": 1, "unknown_video": 10}
    log.forget(7)
    log.close()
    again = EventLog(state_url)  # counters persist, and stay true through a forget
    with again.db.read() as c:
        n = c.execute(select(func.count()).select_from(rec_events)).scalar_one()
        u = c.execute(select(func.count()).where(rec_events.c.unknown_user)).scalar_one()
        v = c.execute(select(func.count()).where(rec_events.c.unknown_video)).scalar_one()
    assert (n, u, v) == (1, 1, 0)
    assert again.flagged() == {"events": n, "unknown_user": u, "unknown_video": v}
