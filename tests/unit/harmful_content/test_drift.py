"""Harmful content's drift monitoring on the real posts: an English model's held-out English
posts stay quiet; posts in another language (MLMA's French and Arabic) fire."""

import numpy as np
import pytest

from mlsd.harmful_content import data as D
from mlsd.harmful_content.features import drift_reference, text_drift
from tests.drift import false_alarm_rate, monitor_over, moved


@pytest.fixture(scope="module")
def english():
    try:
        train, val = D.all_posts("train", ("en",)), D.all_posts("val", ("en",))
    except FileNotFoundError:
        pytest.skip("needs the Davidson and MLMA data sets")
    rng = np.random.default_rng(0)
    train = [train[i] for i in rng.permutation(len(train))[:5000]]
    return drift_reference([p.text for p in train], source="test: English train posts"), val


def test_held_out_english_posts_stay_quiet(english):
    ref, val = english
    rng = np.random.default_rng(1)
    posts = [val[i] for i in rng.permutation(len(val))[:3000]]  # Davidson and MLMA mixed
    mon = monitor_over(ref, (text_drift(p.text) for p in posts), window=200)
    assert false_alarm_rate(mon) <= 0.1


@pytest.mark.parametrize("lang", ["ar", "fr"])
def test_another_language_fires(english, lang):
    posts = D.mlma(lang, "val")[:200]
    mon = monitor_over(english[0], (text_drift(p.text) for p in posts), window=100)
    assert mon.drifted_windows == 2
    assert "latin_share" in moved(mon), moved(mon)  # accents and another script
