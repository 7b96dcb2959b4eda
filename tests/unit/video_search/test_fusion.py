"""Text branch (normalisation, tantivy BM25), fusion, and the Cranfield reader."""

import numpy as np
import pytest

from mlsd.video_search.fusion import FusionConfig, fuse


def test_rrf_and_weighted_sum():
    a = (np.array([1, 2, 3]), np.array([3.0, 2.0, 1.0]))
    b = (np.array([3, 1]), np.array([0.9, 0.1]))
    rrf = fuse({"text": a, "dense": b}, FusionConfig("rrf", rrf_k=60))
    assert rrf[0].doc_id == 1 and rrf[0].sources == {"text": 1, "dense": 2}
    assert rrf[0].score == pytest.approx(1 / 61 + 1 / 62)
    ws = fuse({"text": a, "dense": b}, FusionConfig("weighted_sum", weights={"dense": 2.0}))
    assert ws[0].doc_id == 3 and ws[0].score == pytest.approx(0.0 + 2.0)
    only = fuse({"text": a, "dense": (np.zeros(0, int), np.zeros(0))})
    assert [f.doc_id for f in only] == [1, 2, 3]
    with pytest.raises(ValueError):
        FusionConfig("max")


def test_weak_text_hits_do_not_count_and_strength_beats_rank():
    """The user's case: three videos share one common word with the query (coverage 0.2),
    the visual branch finds the right one (id 9) first."""
    visual = (np.array([9, 1, 2, 3]), np.array([0.31, 0.22, 0.20, 0.18]))
    text = (np.array([1, 2, 3]), np.array([0.2, 0.2, 0.2]))
    rrf = fuse({"visual": visual, "text": text}, FusionConfig("rrf"))
    assert rrf[0].doc_id != 9  # rank only: any text hit wins over a visual-only hit
    floor = FusionConfig("rrf", min_score={"text": 0.5})
    assert fuse({"visual": visual, "text": text}, floor)[0].doc_id == 9
    strength = FusionConfig("weighted_sum", normalise={"text": "none"})
    top = fuse({"visual": visual, "text": text}, strength)[0]
    assert top.doc_id == 9 and top.sources == {"visual": 1}
    # a text hit that covers the whole query still lifts its video
    full = (np.array([2]), np.array([1.0]))
    assert fuse({"visual": visual, "text": full}, strength)[0].doc_id == 2


def test_relative_floor_zscore_and_bad_config():
    text = (np.array([1, 2, 3]), np.array([10.0, 6.0, 1.0]))
    kept = fuse({"text": text}, FusionConfig("rrf", min_relative={"text": 0.5}))
    assert [f.doc_id for f in kept] == [1, 2]
    z = fuse({"text": text}, FusionConfig("weighted_sum", normalise={"text": "zscore"}))
    assert sum(f.score for f in z) == pytest.approx(0.0, abs=1e-9)
    flat = fuse(
        {"text": (np.array([4, 5]), np.array([2.0, 2.0]))},
        FusionConfig("weighted_sum", normalise={"text": "zscore"}),
    )
    assert [f.score for f in flat] == [0.0, 0.0]
    with pytest.raises(ValueError, match="normalise"):
        FusionConfig("weighted_sum", normalise={"text": "softmax"})
    with pytest.raises(ValueError, match="rrf_k"):
        FusionConfig(rrf_k=-1)
