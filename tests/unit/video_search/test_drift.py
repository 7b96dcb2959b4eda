"""Video search's drift monitoring: queries like the texts the model was built for stay quiet;
queries from another domain (Cranfield's aeronautics questions, real) fire; so does another
language. The query path is the served one: sentence encoder + the model's text head."""

import numpy as np
import pytest

from mlsd.data.cranfield import DEFAULT_DIR, load_cranfield
from mlsd.data.synthetic_clips import all_captions
from mlsd.text import SentenceEncoder
from mlsd.video_search.model import (
    PROMPT,
    class_unit,
    drift_reference,
    imagenet_classes,
    query_drift,
    query_encoder,
    zero_shot_model,
)
from tests.drift import false_alarm_rate, monitor_over, moved


@pytest.fixture(scope="module")
def setup():
    text = SentenceEncoder()
    model = zero_shot_model(text)
    texts = all_captions() + [PROMPT.format(c) for c in imagenet_classes()]
    order = np.random.default_rng(0).permutation(len(texts))
    ref_texts = [texts[i] for i in order[: len(texts) // 2]]
    held_out = [texts[i] for i in order[len(texts) // 2 :]]
    ref = drift_reference(model, ref_texts, text.encode(ref_texts))
    return query_encoder(model), class_unit(model), ref, held_out


def _observations(setup, queries):
    encoder, units, _, _ = setup
    vecs = encoder.encode(queries)  # (Q, D), as the TextEncoder deployment answers
    return [query_drift(q, v, units) for q, v in zip(queries, vecs, strict=True)]


def test_held_out_texts_stay_quiet(setup):
    mon = monitor_over(setup[2], _observations(setup, setup[3][:1200]), window=100)
    assert false_alarm_rate(mon) <= 0.1


@pytest.mark.skipif(not DEFAULT_DIR.exists(), reason="needs the Cranfield collection")
def test_queries_from_another_domain_fire(setup):
    queries = load_cranfield().queries[:200]  # aeronautics questions, not video descriptions
    mon = monitor_over(setup[2], _observations(setup, queries), window=100)
    assert mon.drifted_windows == 2
    assert {"query_words", "query"} <= moved(mon), moved(mon)


def test_another_language_fires(setup):
    # German renderings of the same kind of descriptions (written here; labelled as such)
    words = [
        "ein Video von einem Hemd",
        "ein kurzer Film über Stiefel und eine Tasche",
        "eine Hose im Wind",
        "ein Foto von einer Handtasche",
        "Sandalen auf dem Tisch",
        "ein Mantel und ein Kleid",
        "ein Pullover, gefaltet",
        "Turnschuhe im Regal",
    ]
    queries = [w for w in words for _ in range(13)][:100]
    mon = monitor_over(setup[2], _observations(setup, queries), window=100)
    assert mon.drifted_windows == 1
    assert "query" in moved(mon), moved(mon)
