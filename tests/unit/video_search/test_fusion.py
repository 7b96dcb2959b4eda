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
