"""Recommendation's drift monitoring on MovieLens 100K: held-out events and requests of the
training population stay quiet; a new user population (unseen ids with other tastes) fires."""

import dataclasses

import numpy as np
import pytest

from mlsd.artifacts import ArtifactStore
from mlsd.data.movielens import MovieLensNotFound, load_movielens, random_split
from mlsd.drift import load_reference
from mlsd.recommendation.artifact import build_recommender_artifact, load_recommender
from mlsd.recommendation.mf import WALSConfig
from mlsd.recommendation.pipeline import (
    Ranker,
    RankerTrainConfig,
    RecSettings,
    event_drift,
    recommend_one,
    request_drift,
)
from tests.drift import false_alarm_rate, monitor_over, moved


@pytest.fixture(scope="module")
def split_recommender(tmp_path_factory):
    """A tiny recommender trained on a random 90% of the log; the other 10% is held out."""
    try:
        ml = load_movielens()
    except MovieLensNotFound:
        pytest.skip("needs MovieLens 100K")
    train, held_out = random_split(ml.ratings, 0.1, seed=0)
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(ml.n_items, 16)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    settings = RecSettings(
        wals=WALSConfig(factors=8, iterations=3, reg=0.05, seed=0),
        n_candidates=30,
        ranker=RankerTrainConfig(epochs=1, seed=0),
    )
    store = ArtifactStore(tmp_path_factory.mktemp("rec_drift"))
    build_recommender_artifact(store, "rec", dataclasses.replace(ml, ratings=train), emb, settings)
    art = store.load("rec")
    return load_recommender(art), load_reference(art), held_out


def _served(rec, users, videos, now):
    ranker = Ranker.torch(rec.model, rec.tables, device="cpu")
    for u, v in zip(users, videos, strict=True):
        cands, _, final = recommend_one(
            rec.cg, rec.history, ranker, int(u), 10, now, rec.settings
        )  # the serving steps, in process
        yield {
            **request_drift(cands, final, cands.rank_request(now) is not None),
            **event_drift(rec.tables, int(u), int(v)),
        }


def test_held_out_events_of_the_same_population_stay_quiet(split_recommender):
    rec, ref, held_out = split_recommender
    rows = held_out.sample(2000, random_state=1)
    now = int(held_out.timestamp.max()) + 86400
    mon = monitor_over(ref, _served(rec, rows.user_id, rows.item_id, now), window=200)
    assert false_alarm_rate(mon) <= 0.1


def test_a_new_user_population_fires(split_recommender):
    rec, ref, held_out = split_recommender
    rng = np.random.default_rng(2)
    pop = rec.tables.popularity
    niche = np.flatnonzero((pop > 0) & (pop <= np.quantile(pop[pop > 0], 0.5)))
    users = 100_000 + rng.integers(0, 500, 400)  # never seen, no demographics
    videos = rng.choice(niche, 400)  # and other tastes: the catalogue's long tail
    now = int(held_out.timestamp.max()) + 86400
    mon = monitor_over(ref, _served(rec, users, videos, now), window=200)
    assert mon.drifted_windows == 2
    assert {"event_known_user", "event_video_popularity", "request_history"} <= moved(mon)
