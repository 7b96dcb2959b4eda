"""Behaviour of recommendation a user relies on: what they like shapes what they get next.

On a small real model (MovieLens 100K, 32 WALS factors: the 8-factor artifact of the serve
tests is too coarse to express a taste shift), through the serving path: logged events ->
candidates -> ranking -> reranking.
"""

from __future__ import annotations

import numpy as np
import pytest

from mlsd.artifacts import ArtifactStore
from mlsd.data.movielens import GENRES
from mlsd.recommendation.artifact import load_ranker, load_recommender
from mlsd.recommendation.pipeline import recommend_one
from tests.conftest import build_tiny_recommender

AT = 893_300_000  # a request time inside MovieLens' log


@pytest.fixture(scope="module")
def system(tmp_path_factory):

    root = tmp_path_factory.mktemp("rec32")
    build_tiny_recommender(root, "v1", factors=32, iterations=10)
    art = ArtifactStore(root).load("recommendation")
    return load_recommender(art), load_ranker(art, device="cpu")


def _light_users(rec, n: int = 5) -> list[int]:
    """Trained users with the shortest histories (MovieLens' minimum: 20 ratings)."""
    lengths = np.diff(rec.history.indptr)
    trained = np.flatnonzero(rec.cg.trained_users & (lengths > 0))
    return [int(u) for u in trained[np.argsort(lengths[trained], kind="stable")[:n]]]


@pytest.mark.parametrize("genre", ["Horror", "Children's"])
def test_liked_genre_rises(system, genre):
    """15 liked films of one genre (mid-popularity ones, as a fan's likes are: not only the
    blockbusters) raise that genre's share of the top 20: strongly for a user the model never
    saw (the likes are all it knows), on average for trained users with short histories (20
    ratings each); the liked films themselves are not shown again."""

    rec, ranker = system
    g = GENRES.index(genre)
    pop = rec.tables.popularity
    liked = np.flatnonzero((rec.tables.genres[:, g] > 0) & (pop >= 20) & (pop <= 150))[:15]
    logged = (liked, np.full(len(liked), 5.0, np.float32))

    def share(items: np.ndarray) -> float:
        return float((rec.tables.genres[items, g] > 0).mean())

    shares = {}
    for user in [10**6, *_light_users(rec)]:
        _, before, _ = recommend_one(rec.cg, rec.history, ranker, user, 20, AT, rec.settings)
        cands, after, _ = recommend_one(
            rec.cg, rec.history, ranker, user, 20, AT, rec.settings, logged
        )
        assert cands.strategy == ("fold_in" if user == 10**6 else "personal")
        assert not set(after.tolist()) & set(liked.tolist())
        shares[user] = (share(before), share(after))
    new_before, new_after = shares.pop(10**6)
    assert new_after >= new_before + 0.3, (genre, new_before, new_after)  # likes are all it has
    before, after = np.mean(list(shares.values()), axis=0)  # a model, so: on average
    assert after >= before + 0.05, (genre, shares)
