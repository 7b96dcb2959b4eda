"""Recommendation core without Ray: evaluation protocol, candidates and cold start, features
and ranker, reranking rules, the event log, the artifact (round trip and corruption)."""

import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from mlsd.artifacts import ArtifactError, ArtifactStore
from mlsd.data.movielens import GENRES, load_movielens, temporal_split
from mlsd.recommendation.artifact import load_ranker, load_recommender
from mlsd.recommendation.evaluation import EvalSet, evaluate_lists, evaluate_scores, top_k
from mlsd.recommendation.events import EventLog
from mlsd.recommendation.features import N_DENSE, RankRequest, build_batch
from mlsd.recommendation.mf import WALSConfig
from mlsd.recommendation.pipeline import (
    Ranker,
    RankerTrainConfig,
    RecSettings,
    TwoStage,
    fit_candidate_generator,
    generate_candidates,
    new_ranker,
    ranker_examples,
    ranker_loss,
    train_ranker,
)
from mlsd.recommendation.rerank import RecRerankConfig, rerank


@pytest.fixture(scope="module")
def ml():
    return load_movielens()


@pytest.fixture(scope="module")
def fitted(ml):
    train, test = temporal_split(ml.ratings)
    emb = np.random.default_rng(0).normal(size=(ml.n_items, 16)).astype(np.float32)
    st = RecSettings(wals=WALSConfig(factors=16, iterations=5, reg=0.05), n_candidates=50)
    cg, tables, history = fit_candidate_generator(ml, train, emb, st)
    return train, test, emb, st, cg, tables, history


def test_evaluation_protocol_by_hand():
    train = pd.DataFrame(
        {"user_id": [1, 1, 2], "item_id": [1, 2, 3], "rating": [5, 5, 5], "timestamp": [0, 1, 2]}
    )
    test = pd.DataFrame(
        {"user_id": [1, 1, 2], "item_id": [3, 4, 1], "rating": [5, 2, 3], "timestamp": [5, 6, 7]}
    )
    ev = EvalSet.build(train, test, n_items=6)
    assert ev.users.tolist() == [1]  # user 2 has no relevant test item
    assert ev.relevant == [{3}] and ev.request_ts.tolist() == [5]
    # candidates = items seen in train (1, 2, 3) minus the user's own (1, 2) -> only 3
    res = evaluate_scores(ev, lambda u: np.tile(np.arange(6.0)[::-1], (len(u), 1)), k=2)
    assert res["recall@2"] == 1.0 and res["nDCG@2"] == 1.0 and res["precision@2"] == 0.5
    res = evaluate_lists(ev, [[4, 3]], k=2)  # relevant at rank 2
    assert res["nDCG@2"] == pytest.approx(1 / np.log2(3)) and res["MAP@2"] == 0.5
    assert top_k(np.array([[0.1, 0.5, 0.3]]), 2).tolist() == [[1, 2]]


def test_wals_candidates_beat_popularity_on_the_temporal_split(ml, fitted):
    train, test, *_, cg, tables, history = fitted
    ev = EvalSet.build(train, test, ml.n_items)
    ts = TwoStage(cg, tables, history, None, RecSettings(n_candidates=50))
    wals = evaluate_lists(ev, ts.recommend(ev.users, ev.request_ts, 10))
    pop = evaluate_scores(ev, lambda u: np.tile(tables.popularity, (len(u), 1)))
    assert wals["nDCG@10"] > pop["nDCG@10"] > 0.05


def test_cold_start_strategies(fitted):
    *_, cg, tables, history = fitted
    user = int(np.flatnonzero(cg.trained_users)[0])
    seen, _ = history.of(user)
    c = cg.generate(user, 20, seen)
    assert c.strategy == "personal" and len(c.items) == 20
    assert not set(c.items.tolist()) & set(seen.tolist())
    # logged interactions after training refresh the factor by fold-in
    fresh = cg.generate(user, 20, seen, fresh=np.array([c.items[0]]))
    assert fresh.strategy == "personal" and c.items[0] not in fresh.items
    # an id without training history but with logged events: fold-in
    assert cg.generate(10**6, 5, fresh=np.array([1, 2, 3])).strategy == "fold_in"
    # known demographics, no history
    cg.trained_users[user] = False
    demo = cg.generate(user, 5)
    cg.trained_users[user] = True
    assert demo.strategy == "demographic" and len(demo.items) == 5
    # an id nobody knows: popular items, never an error
    pop = cg.generate(99_999, 5)
    assert pop.strategy == "popular"
    assert pop.items[0] == int(np.argmax(tables.popularity))


def test_features_and_ranker_shapes_and_loss(fitted):
    *_, cg, tables, history = fitted
    reqs = []
    for u in (1, 2):
        c = cg.generate(u, 7, history.of(u)[0])
        reqs.append(RankRequest(u, c.items, c.scores, *history.of(u), 880_000_000))
    reqs.append(RankRequest(10**6, np.array([1, 2]), np.zeros(2), np.zeros(0), np.zeros(0), 0))
    batch = build_batch(tables, reqs)
    assert batch["dense"].shape == (16, N_DENSE) and batch["user_cats"].shape == (3, 4)
    assert torch.isfinite(batch["dense"]).all()
    model = new_ranker(tables, RankerTrainConfig())
    logits = model(batch)
    assert logits.shape == (16,)
    labels = torch.zeros(16)
    labels[[0, 9]] = 1
    loss = ranker_loss(model, batch, labels)
    loss.backward()
    assert torch.isfinite(loss) and model.mlp[0].weight.grad is not None
    scores = Ranker.torch(model.eval(), tables, device="cpu")(reqs)
    assert [len(s) for s in scores] == [7, 7, 2] and all(((s > 0) & (s < 1)).all() for s in scores)


def test_ranker_examples_are_from_the_future_and_training_lowers_the_loss(ml, fitted):
    train, _, emb, *_ = fitted
    st = RecSettings(wals=WALSConfig(factors=8, iterations=3), n_candidates=30)
    ex = ranker_examples(ml, train, emb, st)
    assert len(ex.requests) > 500 and ex.positives() > 100
    hist, target = temporal_split(train)
    r = ex.requests[0]
    assert r.request_ts == target[target.user_id == r.user_id].timestamp.min()
    assert len(r.history_items) == (hist.user_id == r.user_id).sum()  # features see the past only
    losses = []
    train_ranker(ex, RankerTrainConfig(epochs=3), log=lambda m: losses.append(m["loss"]))
    assert losses[-1] < losses[0]


def test_rerank_rules():
    genres = np.zeros((6, len(GENRES)))
    genres[[0, 1, 2], 1] = 1  # three Action videos
    genres[[3, 4, 5], 5] = 1  # three Comedies
    release = np.array([0, 0, 0, 0, 0, 1_000_000_000])
    items, scores = np.arange(6), np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    got, _ = rerank(items, scores, 4, genres, release, 1e9, watched={1})
    assert got.tolist() == [0, 2, 3, 4]
    capped, _ = rerank(items, scores, 4, genres, release, 1e9, cfg=RecRerankConfig(genre_cap=2))
    assert capped.tolist() == [0, 1, 3, 4]
    short, _ = rerank(items, scores, 6, genres, release, 1e9, cfg=RecRerankConfig(genre_cap=2))
    assert len(short) == 6  # the cap defers, it does not starve the list
    fresh_cfg = RecRerankConfig(freshness_boost=1.0)
    fresh, _ = rerank(items, scores, 1, genres, release, 1e9, cfg=fresh_cfg)
    assert fresh.tolist() == [5]
    allowed, _ = rerank(items, scores, 2, genres, release, 1e9, allowed=lambda i: i % 2 == 1)
    assert allowed.tolist() == [1, 3]


def test_event_log_is_durable_and_flags(state_url):
    log = EventLog(state_url)
    a = log.append(1, 10, "watch", 100)
    b = log.append(99_999, 5_000, "like", 101, unknown_user=True, unknown_video=True)
    log.append(1, 11, "click", 102)
    log.append(1, 12, "rate", 103, rating=2.0)
    log.close()
    again = EventLog(state_url)
    assert b > a and len(again) == 4
    assert again.flagged() == {"events": 4, "unknown_user": 1, "unknown_video": 1}
    items, strength = again.for_user(1)
    assert items.tolist() == [10, 12] and strength.tolist() == [3.0, 2.0]  # a click is no watch
    r = again.to_ratings()
    assert len(r) == 3 and r[r.item_id == 5_000].rating.item() == 5


def test_artifact_round_trip_and_corruption(rec_store, tmp_path):
    store = ArtifactStore(rec_store)
    rec = load_recommender(store.load("recommendation", "v1"))
    assert rec.version == "v1" and rec.tables.n_items == 1683
    c = rec.cg.generate(1, 10, rec.history.of(1)[0])
    assert c.strategy == "personal" and len(c.items) == 10

    bad = tmp_path / "store"
    shutil.copytree(rec_store, bad)
    (bad / "recommendation" / "v1" / "ranker.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ArtifactError, match="ranker.pt"):
        load_recommender(ArtifactStore(bad).load("recommendation", "v1"))
    (bad / "recommendation" / "v2" / "factors.npz").unlink()
    with pytest.raises(ArtifactError, match="factors.npz"):
        load_recommender(ArtifactStore(bad).load("recommendation", "v2"))


def test_ranker_onnx_export_matches_torch(rec_store):
    """The artifact's ranker.onnx (named inputs) scores what the torch model scores, for
    requests of other sizes than the export example, histories empty or long."""
    art = ArtifactStore(rec_store).load("recommendation", "v1")
    torch_ranker = load_ranker(art, "torch", device="cpu")
    onnx_ranker = load_ranker(art, "onnx", device="cpu")
    rec = load_recommender(art)
    reqs = []
    for u in (1, 5, 42, 10**6):  # a trained user with history ... an unknown id
        c = generate_candidates(rec.cg, rec.history, u, 25)
        reqs.append(RankRequest(u, c.items, c.scores, c.history_items, c.history_ratings, 9e8))
    a, b = torch_ranker(reqs), onnx_ranker(reqs)
    assert [len(x) for x in a] == [len(x) for x in b] == [25] * 4
    for x, y in zip(a, b, strict=True):
        np.testing.assert_allclose(x, y, atol=1e-5)
        assert (np.argsort(-x) == np.argsort(-y)).mean() > 0.9


def test_generate_candidates_merges_logged_events(rec_store):
    """Serving's history merge: logged watches count as history (not recommended again, and
    they turn an unseen user into a fold-in one); unknown videos in the log are ignored."""
    rec = load_recommender(ArtifactStore(rec_store).load("recommendation", "v1"))
    new_user = rec.tables.n_users + 5  # no factor, no demographics
    cold = generate_candidates(rec.cg, rec.history, new_user, 10)
    assert cold.strategy == "popular"
    logged = (np.array([int(cold.items[0]), 10**7]), np.array([5.0, 5.0], np.float32))
    warm = generate_candidates(rec.cg, rec.history, new_user, 10, logged)
    assert warm.strategy == "fold_in" and int(cold.items[0]) not in warm.items.tolist()
    assert warm.history_items.tolist() == [int(cold.items[0])]
    assert warm.rank_request(0) is not None and cold.rank_request(0) is None
