"""The platform's policy: calibrated heads moved to the platform's prevalence, removal only
where a head reaches the stated precision, review within the stated capacity, and what cannot
be met said. Synthetic scores (labelled SYNTHETIC: a head whose score separates the classes
by a known margin) so the expected figures are known."""

from __future__ import annotations

import numpy as np
import pytest

from mlsd.harmful_content.policy import (
    Calibration,
    Decision,
    PolicyTargets,
    ValidationScores,
    fit_calibration,
    fit_platform_policy,
    language_rule,
    outcome_shares,
    prior_weights,
)


def _scores(n: int = 6000, base: float = 0.8, seed: int = 0) -> ValidationScores:
    """SYNTHETIC validation set shaped like Davidson: mostly harmful (``base``); head
    "strong" separates the classes well, head "weak" barely, head "other" is carried by no
    post (another data set's head)."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < base).astype(float)
    strong = 1 / (1 + np.exp(-(3.0 * (2 * y - 1) + rng.normal(0, 1.5, n) + 1.0)))
    weak = 1 / (1 + np.exp(-(0.3 * (2 * y - 1) + rng.normal(0, 1.0, n) + 1.0)))
    other = rng.random(n)
    labels = np.stack([y, y, np.full(n, np.nan)], axis=1)
    return ValidationScores(["strong", "weak", "other"], np.stack([strong, weak, other], 1), labels)


def test_calibration_matches_frequencies_and_moves_with_the_prior():
    rng = np.random.default_rng(1)
    p = rng.random(20_000)
    y = (rng.random(20_000) < p**2).astype(float)  # overconfident scores: truth is p^2
    c = fit_calibration(y, p)
    q = c.at(p, None)
    for lo in (0.1, 0.5, 0.8):
        sel = (q >= lo) & (q < lo + 0.1)
        assert abs(y[sel].mean() - q[sel].mean()) < 0.05
    # Bayes' rule: at a lower prevalence every probability falls, order unchanged
    low = c.at(p, 0.05)
    assert (low < q).all() and (np.argsort(low) == np.argsort(q)).all()
    assert Calibration(1.0, 0.0, 0.5).at(np.array([0.5]), 0.05)[0] == pytest.approx(0.05)


def test_reweighting_gives_the_stated_prevalence():
    y = np.r_[np.ones(800), np.zeros(200)]
    w = prior_weights(y, 0.05)
    assert (w * y).sum() / w.sum() == pytest.approx(0.05)


def test_targets_hold_on_fresh_rows_at_the_platforms_prevalence():
    val, test = _scores(seed=0), _scores(seed=1)
    targets = PolicyTargets(prevalence=0.05, review_capacity=0.05, removal_precision=0.9)
    policy, report = fit_platform_policy(val, targets)
    harmful = test.harmful()
    w = prior_weights(harmful.astype(float), 0.05)
    out = outcome_shares(policy, test.heads, test.probs, harmful, w)
    assert out["removal_precision"] >= 0.85  # the target, within sampling noise
    assert out["review"] <= 0.05 + 0.01
    assert out["benign_allowed"] >= 0.9
    # the raw thresholds a training set's base rate suggests would flag most benign posts
    assert report.expected["benign_allowed"] >= 0.9
    # the weak head never removes on its own, and says so; a head no post carries neither
    assert policy.heads["weak"].remove == 1.0 and policy.heads["other"].remove == 1.0
    assert any(n.startswith("weak: never removes") for n in report.notes)
    assert report.heads["strong"]["drives"] > 0.9  # decisions come from the head that knows


def test_a_smaller_capacity_raises_the_review_threshold_and_says_so():
    val = _scores()
    wide, r_wide = fit_platform_policy(val, PolicyTargets(review_capacity=0.2, review_min=0.05))
    tight, r_tight = fit_platform_policy(val, PolicyTargets(review_capacity=0.01, review_min=0.05))
    assert r_tight.review_threshold > r_wide.review_threshold
    assert r_tight.expected["review"] <= 0.01 + 1e-9 < r_wide.expected["review"]
    assert any("review capacity 0.01" in n for n in r_tight.notes)


def test_a_higher_prevalence_removes_and_reviews_more():
    val = _scores()
    low = fit_platform_policy(val, PolicyTargets(prevalence=0.01))[0]
    high = fit_platform_policy(val, PolicyTargets(prevalence=0.3))[0]
    p = {"strong": 0.9, "weak": 0.7, "other": 0.5}
    assert high.decide(p).scores["strong"] > low.decide(p).scores["strong"]


@pytest.mark.parametrize(
    "field, value",
    [("prevalence", 0.0), ("prevalence", 1.0), ("review_capacity", 1.5), ("demote", 0.0)],
)
def test_impossible_targets_are_refused(field, value):
    with pytest.raises(ValueError, match=field):
        PolicyTargets(**{field: value})


def test_validation_scores_round_trip(tmp_path):
    val = _scores(n=50)
    val.save(tmp_path / "v.npz")
    back = ValidationScores.load(tmp_path / "v.npz")
    assert back.heads == val.heads and np.allclose(back.probs, val.probs)
    assert np.array_equal(np.isnan(back.labels), np.isnan(val.labels))


def test_an_unseen_language_is_never_a_silent_guess():

    langs = ["ar", "en", "fr"]
    seen = Decision("allow", [], {"hate": 0.01})
    assert language_rule(seen, "en", langs, "review") == [] and seen.action == "allow"
    scored = Decision("allow", [], {"hate": 0.01})
    notes = language_rule(scored, "de", langs, "score")
    assert scored.action == "allow" and "'de' is not one the model was trained on" in notes[0]
    routed = Decision("allow", [], {"hate": 0.01})
    notes = language_rule(routed, "de", langs, "review")
    assert routed.action == "review" and routed.reasons == ["unseen_language"]
    assert "sent to review by rule" in notes[0]
    removed = Decision("remove", ["hate"], {"hate": 0.99})  # the scores' removal stands
    language_rule(removed, "de", langs, "review")
    assert removed.action == "remove"
