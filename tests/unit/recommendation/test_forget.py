"""Forgetting a user's watch history: the logged events deleted with a tombstone in the same
transaction; serving sets aside what the model learnt of the user; the next training run drops
their base ratings and records the last tombstone it took in."""

import numpy as np
import pytest

from mlsd.artifacts import ArtifactStore
from mlsd.data.movielens import load_movielens
from mlsd.recommendation.artifact import load_recommender
from mlsd.recommendation.events import EventLog
from mlsd.recommendation.pipeline import generate_candidates
from mlsd.state import StoreMissing
from train.recommendation import with_logged_events


def test_forget_deletes_the_events_and_keeps_the_counters_true(state_url):
    log = EventLog(state_url)
    for video in (1, 2, 99_999):
        log.append(42, video, "like", 893_000_000, unknown_video=video == 99_999)
    log.append(7, 3, "watch", 893_000_000, unknown_user=True)
    assert not log.is_forgotten(42)
    assert log.forget(42, "42") == 3
    assert log.for_user(42)[0].tolist() == [] and log.for_user(7)[0].tolist() == [3]
    assert log.flagged() == {"events": 1, "unknown_user": 1, "unknown_video": 0}
    assert log.is_forgotten(42) and not log.is_forgotten(7)
    assert log.forget(42, "42") == 0  # twice: nothing left to remove
    users, upto = log.forgotten()
    assert users == {42} and upto == 2
    assert not log.is_forgotten(42, after=upto)  # a model trained after both tombstones
    log.append(42, 5, "like", 893_000_100)  # logged after the forget: a new history
    assert log.for_user(42)[0].tolist() == [5]


def test_a_forgotten_user_gets_no_personal_candidates(rec_store):
    rec = load_recommender(ArtifactStore(rec_store).load("recommendation", "v2"))
    user = int(np.flatnonzero(rec.cg.trained_users)[0])
    known = generate_candidates(rec.cg, rec.history, user, 20)
    assert known.strategy == "personal" and len(known.history_items)
    gone = generate_candidates(rec.cg, rec.history, user, 20, forgotten=True)
    assert gone.strategy in ("demographic", "popular") and len(gone.history_items) == 0
    fresh = (np.array([50]), np.array([5.0], np.float32))
    again = generate_candidates(rec.cg, rec.history, user, 20, fresh, forgotten=True)
    assert again.strategy == "fold_in" and again.history_items.tolist() == [50]


def test_the_next_training_run_does_not_see_them(state_url):
    ml = load_movielens()
    log = EventLog(state_url)
    log.append(1, 10, "like", 893_000_000)
    log.append(2, 10, "like", 893_000_000)
    log.forget(1, "admin")
    log.append(1, 20, "like", 893_000_500)  # after the forget: kept
    log.close()
    out, info = with_logged_events(ml, state_url)
    r = out.ratings
    assert r[r.user_id == 1].item_id.tolist() == [20]
    assert len(r[r.user_id == 2]) == len(ml.ratings[ml.ratings.user_id == 2]) + 1
    assert info["forgotten_users"] == 1 and info["forgotten_upto"] == 1
    assert info["forgotten_ratings"] == int((ml.ratings.user_id == 1).sum())


def test_a_training_run_whose_log_cannot_be_read_fails_naming_it(tmp_path):
    """Never a model built without the forgets: a missing log is an error, not an empty one."""
    missing = tmp_path / "events.db"
    with pytest.raises(StoreMissing, match=str(missing)):
        with_logged_events(load_movielens(), str(missing))
    assert not missing.exists()
    assert with_logged_events(load_movielens(), "none")[1]["logged_events"] == 0
