"""Stored uploads and per-user history are bounded; health counters never scan."""

from __future__ import annotations

import numpy as np
import pytest

from mlsd.recommendation.events import EventLog
from mlsd.visual_search.catalogue import CatalogueLog, QuotaExceeded


def test_one_owner_cannot_fill_the_catalogue(tmp_path):
    log = CatalogueLog(tmp_path / "l.sqlite", max_per_owner=3)
    for _ in range(3):
        log.append(np.ones(4), "m", owner="mallory", image=b"x")
    with pytest.raises(QuotaExceeded, match="mallory"):
        log.append(np.ones(4), "m", owner="mallory", image=b"x")
    log.append(np.ones(4), "m", owner="alice", image=b"x")  # others are not affected


def test_uploaded_bytes_expire_but_stay_searchable(tmp_path):
    log = CatalogueLog(tmp_path / "l.sqlite", retention_s=3600)
    i = log.append(np.ones(4), "m", owner="a", image=b"raw")
    assert log.image_bytes(i) == b"raw"
    assert log.prune(now=__import__("time").time() + 7200) == 1
    assert log.image_bytes(i) is None
    assert [m.meta.image_id for _, m in log.since(0)] == [i]  # the embedding stays


def test_history_read_is_bounded_and_counters_match_a_scan(tmp_path):
    log = EventLog(tmp_path / "e.db")
    for t in range(50):
        log.append(7, t, "watch", t, unknown_video=t % 5 == 0)
    log.append(8, 1, "click", 1, unknown_user=True)
    items, _ = log.for_user(7, limit=10)
    assert items.tolist() == list(range(40, 50))  # the newest, oldest first
    assert log.flagged() == {"events": 51, "unknown_user": 1, "unknown_video": 10}
    log.close()
    again = EventLog(tmp_path / "e.db")  # counters persist; an old log is counted once
    u, v, n = again._scan_flagged()
    assert again.flagged() == {"events": n, "unknown_user": u, "unknown_video": v}
