"""Live ids are unique, above the artifact range, exact in JSON, and not sequential."""

from __future__ import annotations

import numpy as np

from mlsd.state import ID_BITS, LIVE_ID_BASE, IdPermutation
from mlsd.visual_search.catalogue import CatalogueLog


def test_the_permutation_is_a_bijection_that_hides_the_order():
    p = IdPermutation(b"k" * 32)
    ids = [p.forward(i) for i in range(1, 2001)]
    assert len(set(ids)) == 2000 and all(0 <= x < 1 << ID_BITS for x in ids)
    assert [p.inverse(x) for x in ids] == list(range(1, 2001))
    assert sum(b > a for a, b in zip(ids, ids[1:], strict=False)) < 1200  # not increasing
    assert IdPermutation(b"j" * 32).forward(1) != ids[0]  # another log, other ids


def test_an_empty_key_keeps_sequential_ids():
    """A log migrated from before ids were permuted keeps the ids it handed out."""
    p = IdPermutation(b"")
    assert [p.live_id(s) for s in (1, 2, 3)] == [
        LIVE_ID_BASE + 1,
        LIVE_ID_BASE + 2,
        LIVE_ID_BASE + 3,
    ]
    assert p.seq_of(LIVE_ID_BASE + 7) == 7 and p.seq_of(5) is None


def test_catalogue_ids_are_unguessable_and_resolve(state_url, objects):
    log = CatalogueLog(state_url, objects)
    ids = [log.append(np.ones(4), "m", image=bytes([i])) for i in range(20)]
    assert min(ids) > LIVE_ID_BASE and max(ids) < 2**53
    assert ids != sorted(ids) and len(set(ids)) == 20
    assert log.image_bytes(ids[3]) == bytes([3])
    assert log.image_bytes(ids[3] + 1) in (None, *[bytes([i]) for i in range(20)])
    assert log.image_bytes(5) is None  # an artifact-range id is never a live one
    again = CatalogueLog(state_url, objects)  # the key persists with the store
    assert [m.meta.image_id for _, m in again.since(0)] == ids
