"""Live ids are unique, above the artifact range, exact in JSON, and not sequential."""

from __future__ import annotations

import sqlite3

import numpy as np

from mlsd.durable import ID_BITS, LIVE_ID_BASE, IdPermutation
from mlsd.visual_search.catalogue import CatalogueLog


def test_the_permutation_is_a_bijection_that_hides_the_order():
    p = IdPermutation(b"k" * 32)
    ids = [p.forward(i) for i in range(1, 2001)]
    assert len(set(ids)) == 2000 and all(0 <= x < 1 << ID_BITS for x in ids)
    assert [p.inverse(x) for x in ids] == list(range(1, 2001))
    assert sum(b > a for a, b in zip(ids, ids[1:], strict=False)) < 1200  # not increasing
    assert IdPermutation(b"j" * 32).forward(1) != ids[0]  # another log, other ids


def test_catalogue_ids_are_unguessable_and_resolve(tmp_path):
    log = CatalogueLog(tmp_path / "live.sqlite")
    ids = [log.append(np.ones(4), "m", image=bytes([i])) for i in range(20)]
    assert min(ids) > LIVE_ID_BASE and max(ids) < 2**53
    assert ids != sorted(ids) and len(set(ids)) == 20
    assert log.image_bytes(ids[3]) == bytes([3])
    assert log.image_bytes(ids[3] + 1) in (None, *[bytes([i]) for i in range(20)])
    assert log.image_bytes(5) is None  # an artifact-range id is never a live one
    again = CatalogueLog(tmp_path / "live.sqlite")  # the key persists with the log
    assert [m.meta.image_id for _, m in again.since(0)] == ids


def test_a_log_from_before_keeps_its_sequential_ids(tmp_path):
    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    db.execute(
        "CREATE TABLE images (seq INTEGER PRIMARY KEY AUTOINCREMENT, owner TEXT, private INTEGER"
        " NOT NULL, unsafe INTEGER NOT NULL, signature TEXT, embedding BLOB NOT NULL, dim"
        " INTEGER NOT NULL, model_version TEXT NOT NULL, image BLOB, created REAL)"
    )
    db.execute(
        "INSERT INTO images (owner, private, unsafe, embedding, dim, model_version)"
        " VALUES (NULL, 0, 0, ?, 4, 'm')",
        (np.ones(4, np.float32).tobytes(),),
    )
    db.commit()
    db.close()
    log = CatalogueLog(path)
    assert [m.meta.image_id for _, m in log.since(0)] == [LIVE_ID_BASE + 1]  # handed out
