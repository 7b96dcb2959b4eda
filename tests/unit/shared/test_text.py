"""Text branch (normalisation, tantivy BM25), fusion, and the Cranfield reader."""

import numpy as np
import pytest

from mlsd.data.cranfield import DEFAULT_DIR, load_cranfield
from mlsd.text import OFFLINE_MINILM, SentenceEncoder, resolve_text_model
from mlsd.text_index import TextIndex, normalise


def test_normalise_the_books_way():
    assert normalise("  Noël: the BEST-ever\tvideo!! ") == "noel the best ever video"
    assert normalise("Ünïcödé\x00\x07 café_crème") == "unicode cafe creme"
    assert normalise("!!! ...") == ""


@pytest.fixture
def index():
    idx = TextIndex()
    idx.add(1, title="Cycling in Brussels", description="riders on bikes", tags="bike city")
    idx.add(2, title="Cooking pasta", description="a chef cooks", tags="food")
    idx.add(3, title="Noël market", description="christmas lights", tags="winter")
    idx.commit()
    return idx


def test_bm25_with_stemming_and_accents(index):
    ids, scores = index.search("biking", 10)
    assert ids.tolist() == [1] and scores[0] > 0
    assert index.search("noel", 5)[0].tolist() == [3]  # accent folded at index and query time
    assert index.search("Cooks!", 5)[0].tolist() == [2]
    assert len(index) == 3


@pytest.mark.parametrize(
    "q, expected",
    [
        ('title:"pasta (', [2]),  # query syntax is plain words: "title pasta"
        ("AND OR", []),
        ("-", []),
        ("foo:bar", []),
        ("\x00\x1f", []),
        ("   ", []),
        ("'; DROP TABLE", []),
        ("christmas OR (bike", [3, 1]),  # an OR of terms, never a parse error
    ],
)
def test_hostile_queries_are_plain_words(index, q, expected):
    ids, scores = index.search(q, 10)
    assert sorted(ids.tolist()) == sorted(expected)
    assert len(scores) == len(ids) and (scores > 0).all()


def test_delete_and_unknown_field(index):
    index.delete(1)
    index.commit()
    assert index.search("bike", 5)[0].tolist() == []
    with pytest.raises(ValueError):
        index.add(9, body="x")


def test_cranfield_reader():

    if not (DEFAULT_DIR / "cran.all.1400").exists():
        pytest.skip("Cranfield not under ../shared/data/cranfield")
    c = load_cranfield()
    assert len(c.doc_ids) == 1400 and len(c.queries) == 225
    assert all(c.qrels) and set(g for q in c.qrels for g in q.values()) <= {1, 2, 3, 4}
    assert c.titles[0].startswith("experimental investigation of the aerodynamics")


def test_offline_sentence_encoder():

    enc = SentenceEncoder(OFFLINE_MINILM)
    assert enc.max_length == 256 and enc.dim == 384  # the model's own limits
    v = enc.encode(["a cat sleeps on the sofa", "a kitten naps on a couch", "stock prices fell"])
    assert v.shape == (3, 384) and np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-5)
    assert v[0] @ v[1] > v[0] @ v[2] + 0.3
    assert enc.encode([]).shape == (0, 384)
    assert resolve_text_model("sentence-transformers/all-MiniLM-L6-v2").startswith("sentence")


def test_the_onnx_sentence_encoder_gives_the_torch_vectors():
    """Exported at build with dynamic batch and length: one token, a truncated 256-token
    text, mixed lengths padded in one batch and non-Latin text all match torch."""
    torch_enc = SentenceEncoder(OFFLINE_MINILM, num_threads=1)
    onnx_enc = SentenceEncoder(OFFLINE_MINILM, num_threads=1, backend="onnx")
    assert onnx_enc.runner.backend == "onnx"
    cases = [["a"], ["word " * 300], ["x", "a heron standing in a lake at dawn with mist"]]
    for texts in cases + [["é 漢字 🙂", "stock prices fell", "a cat"]]:
        assert np.abs(torch_enc.encode(texts) - onnx_enc.encode(texts)).max() < 1e-5, texts
    with pytest.raises(ValueError, match="backend"):
        SentenceEncoder(OFFLINE_MINILM, backend="tensorrt")


def test_stop_words_are_not_a_match(index):
    assert index.search("a the of on in", 5)[0].tolist() == []
    assert index.search("the chef", 5)[0].tolist() == [2]
    plain = TextIndex(tokenizer="en_stem")  # the analyser without stop words matches "a"
    plain.add(2, description="a chef cooks")
    assert plain.search("a bike", 5)[0].tolist() == [2]


def test_coverage_is_the_idf_weighted_share_of_the_query(index):
    ids, bm25, cov = index.search_with_coverage("a chef cooking pasta", 5)
    assert ids.tolist() == [2] and cov[0] == pytest.approx(1.0)
    ids, bm25, cov = index.search_with_coverage("chef bike", 5)
    assert sorted(ids.tolist()) == [1, 2] and np.allclose(cov, 0.5)  # one of two equal terms
    assert index.search_with_coverage("and the", 5)[0].tolist() == []
    assert (bm25 > 0).all()


@pytest.mark.parametrize(
    "language, doc, query",
    [
        ("french", "le chat mange la souris", "les chats"),
        ("german", "die Katzen spielen", "der Katze"),
        ("arabic", "القطط تلعب", "القطط"),  # a stemmer, no stop word list in tantivy
    ],
)
def test_other_languages(language, doc, query):
    idx = TextIndex(["text"], tokenizer=language)
    idx.add(1, text=doc)
    assert idx.search(query, 5)[0].tolist() == [1]
    if language != "arabic":
        assert (
            idx.search({"french": "la le les", "german": "die der das"}[language], 5)[0].size == 0
        )


def test_unknown_language_is_a_clear_error():
    with pytest.raises(ValueError, match="klingon"):
        TextIndex(tokenizer="klingon")
