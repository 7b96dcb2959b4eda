"""Harmful content, pure parts: data splits, features with missing inputs, masked multi-task
loss, early vs late fusion on the SYNTHETIC meme set, policy, the durable review queue."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from mlsd.artifacts import ArtifactStore
from mlsd.harmful_content import data as D
from mlsd.harmful_content import evaluation as E
from mlsd.harmful_content import features as F
from mlsd.harmful_content import model as M
from mlsd.harmful_content import pipeline as P
from mlsd.harmful_content import synthetic as S
from mlsd.harmful_content.artifact import export_classifier, write_classifier
from mlsd.harmful_content.policy import HeadPolicy, Policy, thresholds_from_validation
from mlsd.harmful_content.review import ReviewConflict, ReviewNotFound, ReviewQueue
from mlsd.model_repository import export_artifact
from mlsd.runtime import make_runner
from mlsd.shadow import ShadowStats
from tests.conftest import start_triton


def _need_data():
    if not (D.DATA_ROOT / "davidson_hate_offensive").exists():
        pytest.skip("harmful-content data not under ../shared/data")


@pytest.mark.data
def test_splits_are_the_documented_ones():
    _need_data()
    sizes = {s: len(D.davidson(s)) for s in D.SPLITS}
    assert sizes == {"train": 17843, "val": 1983, "test": 4957}  # 80/20, val a tenth of the 80
    test = D.davidson("test")
    assert np.mean([p.labels["hate"] for p in test]) == pytest.approx(0.0577, abs=1e-3)
    rows = {s: {p.row for p in D.mlma("fr", s)} for s in D.SPLITS}
    assert not (rows["train"] & rows["test"]) and not (rows["val"] & rows["test"])
    assert len(rows["test"]) == 803
    assert D.mlma_labels("offensive_disrespectful") == {
        "hostile": 1,
        "abusive": 0,
        "hateful": 0,
        "mlma_offensive": 1,
        "disrespectful": 1,
        "fearful": 0,
    }
    assert D.mlma_labels("normal")["hostile"] == 0
    y, m = D.label_matrix(test[:3] + D.mlma("ar", "test")[:2])
    assert m[:3, :2].all() and not m[:3, 2:].any() and m[3:, 2:].all() and not m[3:, :2].any()


def test_missing_inputs_are_zero_with_a_flag_and_counts_are_bounded():
    spec = F.FeatureSpec(text_dim=4, image_dim=3)
    x = F.assemble(
        spec,
        np.ones((2, 4)),
        images=[None, np.ones((2, 3))],
        reactions=[{"likes": 1e18, "reports": -5}, None],
        authors=[{"followers": 10, "gender": "female", "location": "Paris"}, None],
        contexts=[None, {"hour_of_day": 6, "device": "mobile"}],
    )
    assert x["image_present"].ravel().tolist() == [0.0, 1.0] and x["image"][0].sum() == 0
    assert 0 <= x["reactions"].min() and x["reactions"].max() <= 3.0  # 1e18 capped, -5 -> 0
    assert x["author_present"].ravel().tolist() == [1.0, 0.0] and x["location"][1] == 0
    assert x["location"][0] == F.location_bucket("  paris ")  # case and spaces do not matter
    np.testing.assert_allclose(x["context"][1, :2], [1.0, 0.0], atol=1e-6)  # 06:00 on the circle
    model = M.build_classifier(M.ClassifierConfig(heads=("a", "b"), spec=spec))
    assert model(P.to_tensors(x)).shape == (2, 2)


def test_each_head_learns_only_from_rows_that_carry_its_label():
    logits = torch.zeros(4, 2, requires_grad=True)
    y = torch.tensor([[1.0, 0.0], [0.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    mask = torch.tensor([[True, False], [True, False], [False, True], [False, True]])
    loss, _ = M.multitask_loss(logits, y, mask)
    loss.backward()
    assert loss.item() == pytest.approx(2 * np.log(2), rel=1e-5)  # each head's mean, summed
    g = logits.grad
    assert g[0, 1] == 0 and g[1, 1] == 0 and g[2, 0] == 0 and g[3, 0] == 0  # masked: no pull
    none, _ = M.multitask_loss(logits, y, torch.zeros_like(mask))
    assert none.item() == 0.0
    focal, _ = M.multitask_loss(torch.full((4, 2), 4.0), y, mask, focal_gamma=2.0)
    plain, _ = M.multitask_loss(torch.full((4, 2), 4.0), y, mask)
    assert focal < plain  # easy rows count less


@pytest.mark.parametrize("fusion", ["early", "late"])
def test_both_fusions_export_and_run_through_the_onnx_runner(tmp_path, fusion):

    spec = F.FeatureSpec(text_dim=8, image_dim=4)
    model = M.build_classifier(M.ClassifierConfig(heads=("a", "b"), spec=spec, fusion=fusion))
    x = F.assemble(
        spec,
        np.random.default_rng(0).normal(size=(3, 8)).astype(np.float32),
        images=[None, np.ones((1, 4)), None],
    )
    path = export_classifier(model, x, tmp_path / "m.onnx")
    onnx_p = make_runner("onnx", path=path, device="cpu", num_threads=1).run(x)
    np.testing.assert_allclose(onnx_p, P.predict(model, x), atol=1e-5)


def _fit(fusion: str, train: S.MemeSet, epochs: int = 20) -> torch.nn.Module:
    torch.manual_seed(0)
    spec = F.FeatureSpec(text_dim=train.text.shape[1], image_dim=train.image.shape[1])
    cfg = M.ClassifierConfig(
        heads=("meme",), spec=spec, fusion=fusion, hidden=128, modality_dropout=0.0
    )
    model = M.build_classifier(cfg)
    opt = torch.optim.AdamW(model.parameters(), 1e-3)
    x = F.assemble(spec, train.text, images=[v[None] for v in train.image])
    y = train.y[:, None]
    for ep in range(epochs):
        P.train_epoch(model, opt, x, y, np.ones_like(y, bool), rng=np.random.default_rng(ep))
    return model


def test_early_fusion_learns_harm_that_lives_in_the_combination_and_late_fusion_does_not():
    """SYNTHETIC memes: no caption topic and no image topic is harmful on its own."""
    train = S.meme_set(3000, text_dim=64, image_dim=32, noise=0.2, seed=0)
    test = S.meme_set(1500, text_dim=64, image_dim=32, noise=0.2, seed=1)
    spec = F.FeatureSpec(text_dim=64, image_dim=32)
    xt = F.assemble(spec, test.text, images=[v[None] for v in test.image])
    auc = {f: E.auroc(test.y, P.predict(_fit(f, train), xt)[:, 0]) for f in ("early", "late")}
    assert auc["early"] > 0.95
    assert auc["late"] < 0.75  # only the text-only harmful topic is visible to it
    # the construction: each topic alone is harmful about as often as the base rate
    for t in range(7):
        assert abs(train.y[train.text_topic == t].mean() - 0.5) < 0.1


def test_natural_labels_follow_the_documented_noise_model():
    y = np.r_[np.ones(10_000), np.zeros(10_000)]
    n = S.natural_labels(y, seed=0, report_rate=0.6, false_report_rate=0.05)
    assert n[:10_000].mean() == pytest.approx(0.6, abs=0.02)
    assert n[10_000:].mean() == pytest.approx(0.05, abs=0.01)


def test_minority_auprc_scores_the_rarer_class():
    y = np.r_[np.ones(90), np.zeros(10)]
    s = np.r_[np.linspace(0.5, 1, 90), np.linspace(0, 0.4, 10)]  # perfect ranking
    assert E.auprc(y, s) == pytest.approx(1.0) and E.minority_auprc(y, s) == pytest.approx(1.0)
    rng = np.random.default_rng(0)
    r = rng.random(100)
    assert E.minority_auprc(y, r) < 0.4 < E.auprc(y, r)  # positives' AUPRC flatters chance


def test_policy_takes_the_most_severe_action_and_names_its_heads():
    pol = Policy.from_dict(
        {
            "hate": {"remove": 0.8, "review": 0.5, "demote": 0.3},
            "default": {"remove": 0.95, "review": 0.7, "demote": 0.5},
        }
    )
    assert pol.decide({"hate": 0.9, "offensive": 0.99}).reasons == ["offensive", "hate"]
    d = pol.decide({"hate": 0.6, "offensive": 0.2})
    assert (d.action, d.reasons) == ("review", ["hate"])
    assert pol.decide({"hate": 0.35, "offensive": 0.1}).action == "demote"
    assert pol.decide({"hate": 0.1}).action == "allow" and pol.decide({}).reasons == []
    with pytest.raises(ValueError):
        HeadPolicy(remove=0.5, review=0.7)


def test_review_queue_is_durable_idempotent_and_refuses_conflicts(state_url):
    q = ReviewQueue(state_url)
    rid = q.enqueue("p1", {"text": "x"}, {"hate": 0.6}, ["hate"], "m/v1")
    q.enqueue("p2", {"text": "y"}, {"hate": 0.7}, ["hate"], "m/v1")
    q.close()
    q = ReviewQueue(state_url)  # reopened: nothing lost
    assert [r["post_id"] for r in q.list("pending")] == ["p1", "p2"]
    done = q.submit(rid, {"hate": 1}, "rev1")
    assert done["status"] == "done" and done["labels"] == {"hate": 1}
    assert q.submit(rid, {"hate": True}, "rev1")["labels"] == {"hate": 1}  # same again: fine
    with pytest.raises(ReviewConflict):
        q.submit(rid, {"hate": 0}, "rev2")
    with pytest.raises(ReviewNotFound):
        q.submit(rid + 1, {"hate": 1}, "rev1")
    with pytest.raises(ReviewNotFound):
        q.get(5)  # not one of our ids at all
    assert [r["post_id"] for r in q.reviewed()] == ["p1"]
    assert q.counts() == {"pending": 1, "done": 1}


def test_the_ngram_bag_weights_like_tfidf_and_feeds_the_model():
    bag = F.NgramBag(word_buckets=1 << 10, char_buckets=1 << 12, max_len=64).fit(
        ["the cat sat", "the dog ran", "a cat ran"]
    )
    out = bag.transform(["the cat", "", "zzzz " * 100])
    ids, w = out["ngram_ids"], out["ngram_weights"]
    assert ids.shape == w.shape and ids.shape[1] <= 64 and (ids[1] == 0).all()  # "" is padding
    word = (ids[0] > 0) & (ids[0] <= bag.word_buckets)
    assert np.linalg.norm(w[0][word]) == pytest.approx(1.0, rel=1e-5)  # each part unit-length
    assert np.linalg.norm(w[0][ids[0] > bag.word_buckets]) == pytest.approx(1.0, rel=1e-5)
    # TF-IDF: a word in one training text ("sat") weighs more than one in two ("the")
    words, _ = bag._vectorizers()
    row = bag.transform(["the sat"])
    weight = dict(zip(row["ngram_ids"][0].tolist(), row["ngram_weights"][0].tolist(), strict=True))
    sat, the = (int(words.transform([t]).indices[0]) + 1 for t in ("sat", "the"))
    assert weight[sat] > weight[the] * 1.1
    spec = F.FeatureSpec(text_dim=4, ngram_buckets=bag.size)
    x = F.assemble(spec, np.zeros((3, 4), np.float32)) | out
    model = M.build_classifier(M.ClassifierConfig(heads=("h",), spec=spec))
    assert model(P.to_tensors(x)).shape == (3, 1)


def test_text_is_cleaned_not_refused_unless_it_is_not_text():
    assert F.clean_text("  a\x00b\x07c\x1b[31m \n ", 100) == "a b c [31m"
    assert F.clean_text("e\u0301 🙂 مرحبا", 100) == "é 🙂 مرحبا"  # NFC; emoji, scripts kept
    with pytest.raises(F.InvalidPost, match="surrogate"):
        F.clean_text("bad \ud800", 100)
    with pytest.raises(F.InvalidPost, match="limit"):
        F.clean_text("x" * 11, 10)


def test_thresholds_climb_from_the_base_rate_and_never_fire_where_precision_is_not_reached():

    rng = np.random.default_rng(0)
    y = (rng.random(4000) < 0.8).astype(int)  # a majority-positive head, as Davidson offensive
    p = np.clip(0.5 * y + rng.normal(0.25, 0.2, 4000), 0, 1)
    t = thresholds_from_validation(y, p)
    assert 0 < t.demote <= t.review <= t.remove < 1
    share_review = np.mean((p >= t.review) & (p < t.remove))
    assert share_review < 0.5  # not "everything to review" because precision starts at 0.8
    prec_remove = y[p >= t.remove].mean()
    assert prec_remove >= 0.9 + 0.0 and prec_remove >= 0.8 + 0.9 * 0.2 - 0.01
    noise_p = rng.random(4000)
    noise = thresholds_from_validation(y, noise_p)  # a head that learned nothing
    assert noise.remove == 1.0 and np.mean(noise_p >= noise.review) < 0.02  # lucky tops only
    assert thresholds_from_validation(np.ones(5), np.ones(5)) == HeadPolicy(1.0, 1.0, 1.0)


def test_a_retried_post_is_one_review(state_url):
    q = ReviewQueue(state_url)
    a = q.enqueue("u/p1", {"text": "x"}, {"hate": 0.5}, ["hate"], "m")
    assert q.enqueue("u/p1", {"text": "x"}, {"hate": 0.5}, ["hate"], "m") == a
    assert q.enqueue("v/p1", {"text": "x"}, {"hate": 0.5}, ["hate"], "m") != a
    assert q.counts() == {"pending": 2}


def test_two_replicas_racing_on_one_post_make_one_review(state_url):
    """Two ingress replicas (two queue objects: their own connections) enqueue the same post
    at once, many times: one review, and every caller gets its id."""

    queues = [ReviewQueue(state_url), ReviewQueue(state_url)]

    def enqueue(i: int) -> int:
        return queues[i % 2].enqueue(f"u/p{i // 8}", {"text": "x"}, {"hate": 0.5}, ["hate"], "m")

    with ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(enqueue, range(32)))
    assert len(set(ids)) == 4 and queues[0].counts() == {"pending": 4}
    assert all(ids[i] == ids[i - i % 8] for i in range(32))  # one id per post, to everyone


def test_shadow_head_agreement_counts_disagreements_per_head():

    s = ShadowStats("head_agreement", 0)
    heads = ["hate", "offensive"]
    s.record(
        {"action": "review", "flagged": ["hate"], "heads": heads},
        {"action": "review", "flagged": ["hate"], "heads": heads},
    )
    s.record(
        {"action": "remove", "flagged": ["hate", "offensive"], "heads": heads},
        {"action": "review", "flagged": ["hate"], "heads": heads},
    )
    r = s.report()
    assert r["mean_score"] == 0.5 and r["totals"] == {
        "disagree/hate": 0.0,
        "disagree/offensive": 1.0,
    }


class _HashEncoder:  # a fixed random projection stands in for the sentence encoder here
    name, dim = "test-hash", 16

    def encode(self, texts):
        return np.stack([np.random.default_rng(len(t)).normal(size=16) for t in texts])


_POSTS = [{"text": "hello", "comments": ["a", "bcd"], "reactions": {"likes": 3}},
          {"text": "x", "images": [np.ones(4)]}]  # fmt: skip


def _tiny_classifier(root):

    spec = F.FeatureSpec(text_dim=16)
    torch.manual_seed(0)
    model = M.build_classifier(M.ClassifierConfig(heads=("a", "b"), spec=spec, hidden=8))
    x = F.assemble(spec, _HashEncoder().encode(["x", "yy"]))
    write_classifier(
        ArtifactStore(root),
        "hc",
        model,
        M.ClassifierConfig(("a", "b"), spec, hidden=8),
        x,
        "test-hash",
        None,
        {},
        {},
        {},
    )
    return ArtifactStore(root).load("hc")


def test_the_scorer_gives_the_same_probabilities_through_torch_and_onnx(tmp_path):
    """Serving's scorer: one post dict in, probabilities out, whichever runner; inputs the
    model has no place for are reported, not mixed in."""
    art = _tiny_classifier(tmp_path)
    posts, enc = _POSTS, _HashEncoder()
    got = {b: P.HarmScorer(art, b, "cpu", 1, encoder=enc).score(posts) for b in ("torch", "onnx")}
    np.testing.assert_allclose(got["torch"], got["onnx"], atol=1e-5)
    assert got["onnx"].shape == (2, 2) and ((0 < got["onnx"]) & (got["onnx"] < 1)).all()
    scorer = P.HarmScorer(art, "onnx", "cpu", 1, encoder=enc)
    assert scorer.unused(posts[1]) == ["images"] and scorer.unused(posts[0]) == []


def test_the_scorer_through_a_real_triton_server(tmp_path):
    """backend triton: the classifier's ONNX file (12 named inputs, int64 among them) on a
    Triton server gives the in-process probabilities, blocking and awaited."""

    art = _tiny_classifier(tmp_path / "store")
    export_artifact(art, tmp_path / "repo", variant="python")
    local = P.HarmScorer(art, "onnx", "cpu", 1, encoder=_HashEncoder()).score(_POSTS)
    with start_triton(tmp_path / "repo", tmp_path) as server:
        spec = {
            "url": server.grpc_url,
            "model_name": "hc",
            "model_version": "1",
            "expect": {"artifact": f"hc/{art.version}"},
        }
        remote = P.HarmScorer(art, "triton", "cpu", 1, encoder=_HashEncoder(), server=spec)
        np.testing.assert_allclose(remote.score(_POSTS), local, atol=1e-5)
        np.testing.assert_allclose(asyncio.run(remote.ascore(_POSTS)), local, atol=1e-5)


def test_stacked_wide_path_is_a_cross_validated_lr_and_trains_on_out_of_fold_logits(tmp_path):
    """``ngram_mode="stacked"``: the frozen wide table is the per-head logistic regression
    (what sklearn fits at the chosen C), the network trains on out-of-fold logits, and the
    exported model computes the same logits from the bag alone."""

    rng = np.random.default_rng(0)
    words = ["good", "fine", "nice", "calm", "awful", "vile", "scum", "trash"]
    texts = [" ".join(rng.choice(words, 5)) for _ in range(300)]
    y = np.array([[float(sum(w in t.split() for w in words[4:]) >= 2)] for t in texts], np.float32)
    mask = np.ones_like(y, bool)
    bag = F.NgramBag(word_buckets=1 << 10, char_buckets=1 << 10).fit(texts)
    spec = F.FeatureSpec(text_dim=4, ngram_buckets=bag.size)
    cfg = M.ClassifierConfig(heads=("h",), spec=spec, hidden=8, ngram_mode="stacked")
    model = M.build_classifier(cfg)
    oof = P.fit_lexical(model, bag, texts, y, mask, cs=(1.0,), folds=3)
    x = F.assemble(spec, rng.normal(size=(300, 4)).astype(np.float32)) | bag.transform(texts)
    ref = LogisticRegression(C=1.0, max_iter=2000).fit(bag.matrix(texts), y[:, 0].astype(int))
    with torch.no_grad():
        full = model.wide.lexical(P.to_tensors(x)).numpy()[:, 0]
    np.testing.assert_allclose(full, ref.decision_function(bag.matrix(texts)), atol=1e-3)
    assert np.abs(oof[:, 0] - full).mean() > 1e-3  # out of fold: not the full fit's logits
    assert not model.wide.table.weight.requires_grad
    path = export_classifier(model, P.take(x, np.arange(5)), tmp_path / "m.onnx")
    got = make_runner("onnx", path=path, device="cpu", num_threads=1).run(P.take(x, np.arange(5)))
    np.testing.assert_allclose(got, P.predict(model, P.take(x, np.arange(5))), atol=1e-5)
