"""A platform's own ids at the API: string and sparse integer ids read from a log, mapped to
the model's ids and back, and kept in the event log in a form that outlives the model (the
next training run numbers ids afresh and still finds the events and the forgets)."""

from __future__ import annotations

import numpy as np
import pytest

from mlsd.recommendation.data import read_interactions
from mlsd.recommendation.events import EventLog
from mlsd.recommendation.ids import (
    HASH_BASE,
    MAX_INT_ID,
    IdMap,
    PlatformIds,
    UnknownIdForm,
    log_id,
)
from train.recommendation import with_logged_events

LOG = """user_id,item_id,timestamp
alice,v1,1704103200
alice,v2,1704103300
bob,v1,1704103400
carol,v3,1704103500
"""


def _read(tmp_path, text: str = LOG, items: str | None = None):
    (tmp_path / "i.csv").write_text(text)
    if items is not None:
        (tmp_path / "items.csv").write_text(items)
    return read_interactions(
        str(tmp_path / "i.csv"), str(tmp_path / "items.csv") if items is not None else None
    )


def test_string_ids_map_both_ways_and_unknown_ones_are_flagged(tmp_path):
    own = _read(tmp_path)
    ids = PlatformIds.from_json(own.id_maps_json())
    assert ids.users.mapped and not ids.users.integer
    alice = ids.users.parse(" alice ")
    assert alice.key == "alice" and alice.model == own.id_maps["user_id"]["alice"]
    assert ids.users.public(alice.model) == "alice"
    dave = ids.users.parse("dave")  # never seen: the model does not know them, the log does
    assert dave.model == -1 and dave.log == log_id("dave") != alice.log
    assert ids.users.parse(42).key == "42"  # a JSON number is the same id as its digits
    for bad in ("", "a/b", "x" * 129, "tab\there"):
        with pytest.raises(UnknownIdForm):
            ids.users.parse(bad)


def test_log_ids_are_stable_and_apart_from_integer_ids():
    # the same on every replica, node and release: a pure function of the id, pinned here
    # (a change would orphan every event a log keeps)
    assert log_id("alice") == log_id("alice") == 0x4DEAEC0CCE54DA89 % HASH_BASE + HASH_BASE
    ids = [log_id(f"user-{i}") for i in range(20_000)]
    assert len(set(ids)) == len(ids)
    assert min(ids) >= HASH_BASE > MAX_INT_ID and max(ids) < 2**63


def test_integer_deployments_take_only_their_integers():
    ids = IdMap()  # MovieLens: the model's ids are the platform's
    assert ids.parse("007") == ("7", 7, 7) and ids.parse(12).key == "12"
    assert ids.public(12) == 12
    for bad in ("abc", "-1", "1.5", str(MAX_INT_ID + 1)):
        with pytest.raises(UnknownIdForm):
            ids.parse(bad)


def test_sparse_integer_ids_are_numbered_and_answered_as_integers(tmp_path):
    big = "user_id,item_id,timestamp\n" + "".join(
        f"{10**12 + u},{7 * 10**9 + i},{1704103200 + u}\n" for u in range(5) for i in range(3)
    )
    own = _read(tmp_path, big)
    assert own.ml.n_users == 6 and own.ml.n_items == 4  # not 10**12 rows of tables
    ids = PlatformIds.from_json(own.id_maps_json())
    assert ids.users.integer and ids.videos.integer
    u = ids.users.parse(10**12 + 3)
    assert u.model == 4 and ids.users.public(u.model) == 10**12 + 3
    assert ids.users.parse(f"00{10**12 + 3}").model == 4
    with pytest.raises(UnknownIdForm):
        ids.users.parse("u3")
    dense = _read(tmp_path, "user_id,item_id,timestamp\n3,5,1704103200\n")
    assert dense.id_maps == {} and not PlatformIds.from_json(dense.id_maps_json()).users.mapped


def test_items_without_titles_are_named_by_their_ids(tmp_path):
    """An item needs a name (the API's title) and is a known video even when the log comes
    without an items table or the table's title is empty."""
    own = _read(tmp_path)
    titles = own.ml.items.set_index("item_id").title
    assert titles[own.id_maps["item_id"]["v3"]] == "v3"
    own = _read(tmp_path, items="item_id,title\nv1,Herons\nv2,\nv3,City\n")
    titles = own.ml.items.set_index("item_id").title
    assert titles[own.id_maps["item_id"]["v1"]] == "Herons"
    assert titles[own.id_maps["item_id"]["v2"]] == "v2"


def test_the_next_training_run_finds_logged_events_and_forgets_by_platform_id(tmp_path, state_url):
    """Events logged under one model's numbering reach a run whose numbering differs (a new
    user, "aaron", shifts every number), and a forget still drops the right user."""
    first = PlatformIds.from_json(_read(tmp_path).id_maps_json())
    log = EventLog(state_url)
    for user, video in (("bob", "v3"), ("dave", "v2"), ("alice", "v9")):
        u, v = first.users.parse(user), first.videos.parse(video)
        log.append(u.log, v.log, "like", 1704200000)
    log.forget(first.users.parse("carol").log, "carol")
    log.close()
    own = _read(tmp_path, LOG + "aaron,v1,1704103600\ndave,v1,1704103700\n")
    ids = PlatformIds.from_json(own.id_maps_json())
    assert own.id_maps["user_id"]["bob"] != first.users.parse("bob").model  # renumbered
    ml, info = with_logged_events(own.ml, state_url, ids)
    r = ml.ratings
    bob, dave = own.id_maps["user_id"]["bob"], own.id_maps["user_id"]["dave"]
    v2, v3 = own.id_maps["item_id"]["v2"], own.id_maps["item_id"]["v3"]
    assert sorted(r[r.user_id == bob].item_id) == sorted([own.id_maps["item_id"]["v1"], v3])
    assert v2 in r[r.user_id == dave].item_id.tolist()
    assert info["logged_used"] == 2  # alice's v9 is a video this run does not have
    carol = own.id_maps["user_id"]["carol"]
    assert info["forgotten_users"] == 1 and not (r.user_id == carol).any()
    assert np.all(r.user_id.to_numpy() < HASH_BASE)  # no hash reaches the training log
