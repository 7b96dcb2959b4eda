"""Behaviour of harmful-content scoring a moderator relies on (CheckList-style: invariance,
directional expectations, and the known failures written down as strict xfails, so a model
that starts passing one says so).

On a small real model trained here (2,000 training rows of each data set and language, USE
multilingual vectors + the n-gram bag, 128 wide, 10 epochs: the serve tests' 60-row model is
too coarse to show any of this), scored through the serving path (:class:`HarmScorer`).
"""

from __future__ import annotations

import numpy as np
import pytest

from mlsd.artifacts import ArtifactStore
from mlsd.harmful_content.pipeline import HarmScorer
from tests.conftest import build_tiny_harmful

pytestmark = [pytest.mark.slow, pytest.mark.data]

ATTACKS = [
    "you are a stupid worthless idiot",
    "you are a faggot",
    "niggas are trash",
    "go back to your country, nobody wants you here",
]


@pytest.fixture(scope="module")
def scorer(tmp_path_factory) -> HarmScorer:
    root = tmp_path_factory.mktemp("harmful_behaviour")
    build_tiny_harmful(root, rows=2000, epochs=10, hidden=128)
    return HarmScorer(ArtifactStore(root).load("harmful_content"), backend="torch")


def _scores(scorer: HarmScorer, texts: list[str]) -> np.ndarray:
    return scorer.score([{"text": t} for t in texts])  # (B, H)


def _head(scorer: HarmScorer, texts: list[str], head: str) -> np.ndarray:
    return _scores(scorer, texts)[:, scorer.heads.index(head)]


def test_whitespace_does_not_change_a_score(scorer):
    spaced = [t.replace(" ", "  \t ") + " \n" for t in ATTACKS]
    assert np.allclose(_scores(scorer, ATTACKS), _scores(scorer, spaced), atol=1e-3)


def test_casing_does_not_change_a_score(scorer):
    base = _scores(scorer, ATTACKS)
    for variant in ([t.upper() for t in ATTACKS], [t.title() for t in ATTACKS]):
        assert np.allclose(_scores(scorer, variant), base, atol=1e-3)


def test_a_slur_reported_in_quotes_is_less_hateful_than_the_attack(scorer):
    attacks = ["you are a faggot", "niggas are trash"]
    reports = [
        'he called me a "faggot" at school today and it hurt',
        "someone wrote 'niggas are trash' on my wall, this is disgusting racism",
    ]
    assert (_head(scorer, reports, "hate") < _head(scorer, attacks, "hate")).all()


@pytest.mark.xfail(
    strict=True,
    reason="known failure: bag-of-words + sentence vectors do not read negation "
    "(README, harmful content: known failures)",
)
def test_negation_lowers_the_hate_score(scorer):
    hate = _head(
        scorer,
        ["I hate all immigrants, they should die", "I don't hate immigrants, nobody should die"],
        "hate",
    )
    assert hate[1] < hate[0] - 0.05


@pytest.mark.xfail(
    strict=True,
    reason="known failure: a benign word that contains or is a slur scores as offensive "
    "(Davidson's 'offensive' label is largely lexical)",
)
def test_a_benign_word_that_looks_like_a_slur_is_not_offensive(scorer):
    benign = ["the niggardly budget left nothing for repairs", "the bitch had six puppies"]
    assert (_head(scorer, benign, "offensive") < 0.5).all()


def test_plain_friendly_posts_score_below_the_attacks(scorer):
    friendly = ["I love my cat", "what a great game tonight", "thanks for the help yesterday"]
    for head in ("offensive", "hostile"):
        assert _head(scorer, friendly, head).max() < _head(scorer, ATTACKS, head).min()
