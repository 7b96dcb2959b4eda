"""A log file written before the state layer (sqlite3 directly, bytes as BLOBs) is carried over
by ``init``: every acknowledged row, the ids it handed out, its uploads (now in the object
store), its counters. The files are made here with the old schema's own SQL."""

from __future__ import annotations

import hashlib
import os
import secrets
import sqlite3

import numpy as np

from apps.auth import KeyStore
from mlsd.recommendation.events import EventLog
from mlsd.state import LIVE_ID_BASE, IdPermutation, init_store
from mlsd.visual_search.catalogue import CatalogueLog

OLD_IMAGES = """CREATE TABLE images (seq INTEGER PRIMARY KEY AUTOINCREMENT, owner TEXT,
  private INTEGER NOT NULL, unsafe INTEGER NOT NULL, signature TEXT, embedding BLOB NOT NULL,
  dim INTEGER NOT NULL, model_version TEXT NOT NULL, image BLOB, created REAL)"""
OLD_DELETIONS = """CREATE TABLE deletions (seq INTEGER PRIMARY KEY AUTOINCREMENT,
  image_id INTEGER NOT NULL UNIQUE, deleted_by TEXT, created REAL)"""
OLD_EVENTS = """CREATE TABLE events (seq INTEGER PRIMARY KEY AUTOINCREMENT,
  user_id INTEGER NOT NULL, video_id INTEGER NOT NULL, event TEXT NOT NULL, rating REAL,
  timestamp INTEGER NOT NULL, unknown_user INTEGER NOT NULL, unknown_video INTEGER NOT NULL,
  received REAL)"""


def _old_visual_log(path, key: bytes) -> None:
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")  # as the old log ran: rows may sit in the WAL
    db.execute("CREATE TABLE meta (k TEXT PRIMARY KEY, v BLOB)")
    db.execute(OLD_IMAGES)
    db.execute(OLD_DELETIONS)
    db.execute("INSERT INTO meta VALUES ('id_key', ?)", (key,))
    for i in range(3):
        db.execute(
            "INSERT INTO images (owner, private, unsafe, embedding, dim, model_version, image,"
            " created) VALUES ('alice', 0, 0, ?, 4, 'v1:torch', ?, 1.0)",
            (np.full(4, i, np.float32).tobytes(), f"png-{i}".encode()),
        )
    db.execute("INSERT INTO deletions (image_id, deleted_by, created) VALUES (7, 'admin', 2.0)")
    db.commit()
    db.close()


def test_an_old_visual_log_keeps_its_rows_ids_and_uploads(tmp_path, objects):
    path, key = tmp_path / "live.sqlite", secrets.token_bytes(32)
    _old_visual_log(path, key)
    handed_out = [IdPermutation(key).live_id(s) for s in (1, 2, 3)]
    init_store(path, objects)
    log = CatalogueLog(str(path), objects)
    assert [m.meta.image_id for _, m in log.since(0)] == handed_out
    assert [log.image_bytes(i) for i in handed_out] == [b"png-0", b"png-1", b"png-2"]
    assert log.deleted_ids() == {7}
    assert (tmp_path / "live.sqlite.before-state-layer").exists()  # kept, not destroyed
    assert len([f for _, _, fs in os.walk(objects) for f in fs]) == 3  # bytes out of the db
    new = log.append(np.ones(4), "v1:torch")
    assert new not in handed_out and log.ids.seq_of(new) == 4  # the sequence continues
    init_store(path, objects)  # again: a state-layer store now, nothing to carry over
    assert len(log.since(0)) == 4


def test_an_old_log_from_before_permuted_ids_keeps_its_sequential_ids(tmp_path, objects):
    path = tmp_path / "old.sqlite"
    _old_visual_log(path, b"")
    init_store(path, objects)
    ids = [m.meta.image_id for _, m in CatalogueLog(str(path), objects).since(0)]
    assert ids == [LIVE_ID_BASE + 1, LIVE_ID_BASE + 2, LIVE_ID_BASE + 3]  # as handed out


def test_old_events_and_keys_are_carried_over(tmp_path):
    events = tmp_path / "events.db"
    db = sqlite3.connect(events)
    db.execute(OLD_EVENTS)
    db.execute("CREATE TABLE counts (k TEXT PRIMARY KEY, n INTEGER NOT NULL)")
    db.executemany(
        "INSERT INTO events (user_id, video_id, event, rating, timestamp, unknown_user,"
        " unknown_video, received) VALUES (?, ?, 'like', NULL, 100, ?, 0, 1.0)",
        [(1, 10, 0), (2, 11, 1)],
    )
    db.commit()
    db.close()
    init_store(events)
    log = EventLog(str(events))
    assert log.for_user(1)[0].tolist() == [10] and len(log) == 2
    assert log.flagged() == {"events": 2, "unknown_user": 1, "unknown_video": 0}

    keys = tmp_path / "keys.sqlite"
    db = sqlite3.connect(keys)
    db.execute(
        "CREATE TABLE keys (key_id TEXT PRIMARY KEY, user TEXT NOT NULL, scopes TEXT NOT NULL,"
        " digest TEXT NOT NULL, created REAL NOT NULL, revoked REAL, note TEXT)"
    )
    secret = "s" * 43
    digest = hashlib.sha256(secret.encode()).hexdigest()
    db.execute(
        "INSERT INTO keys VALUES ('00112233aabbccdd', 'dev', 'search', ?, 1.0, NULL, '')", (digest,)
    )
    db.commit()
    db.close()
    init_store(keys)
    assert KeyStore(str(keys)).verify(f"mlsd_00112233aabbccdd_{secret}").user == "dev"
