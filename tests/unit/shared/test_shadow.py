import pytest

from mlsd.shadow import ShadowStats, box_agreement, overlap_at_k


def test_overlap_and_stats():
    assert overlap_at_k([1, 2, 3], [3, 2, 9], k=3) == pytest.approx(2 / 3)
    assert overlap_at_k([], []) == 1.0
    s = ShadowStats(k=3)
    s.record([1, 2, 3], [1, 2, 3], primary_ms=10, shadow_ms=20)
    s.record([1, 2, 3], [4, 5, 6], primary_ms=10, shadow_ms=30)
    s.record([1, 2, 3], error="boom")
    s.record([1, 2, 3], timed_out=True)
    r = s.report()
    assert r["mirrored"] == 4 and r["completed"] == 2 and r["errors"] == 1 and r["timeouts"] == 1
    assert r["mean_score"] == pytest.approx(0.5)
    assert r["latency_ratio_p50"] == pytest.approx(2.5)
    assert r["last_error"] == "boom"
    with pytest.raises(ValueError):
        ShadowStats(comparison="vibes")


def test_box_agreement_counts_what_each_would_have_left_unblurred():

    face = [1, 0, 0, 10, 10]
    assert box_agreement([face], [face])["score"] == 1.0
    out = box_agreement([face, [1, 50, 50, 60, 60]], [[1, 1, 1, 10, 10], [2, 50, 50, 60, 60]])
    assert out == {"score": 0.5, "primary_only": 1.0, "shadow_only": 1.0}  # labels must agree
    assert box_agreement([], [])["score"] == 1.0
    stats = ShadowStats("box_f1", 0.5)
    stats.record([face], [])
    stats.record([], [face])
    rep = stats.report()
    assert rep["mean_score"] == 0.0 and rep["totals"] == {"primary_only": 1.0, "shadow_only": 1.0}
