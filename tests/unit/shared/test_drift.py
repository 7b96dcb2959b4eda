"""The shared drift monitor on seeded synthetic streams (labelled synthetic): a shift fires,
no shift stays quiet over many windows, the reference survives a round trip, memory is bounded."""

import numpy as np
import pytest

from mlsd.drift import DriftMonitor, DriftReference, DriftThresholds, build_reference, compare, psi

SYNTHETIC = "synthetic: seeded Gaussian features, scores and a 32-d embedding with structure"


def _data(rng, n, shift=0.0, scale=1.0, emb_shift=0.0):
    basis = np.random.default_rng(99).normal(size=(4, 32))  # the same structure every call
    z = rng.normal(size=(n, 4))
    z[:, 0] += emb_shift
    return {
        "length": rng.normal(10 + shift, 2 * scale, n),
        "count": rng.poisson(3, n).astype(float),  # discrete: repeated bin edges
        "score": rng.beta(2, 5, n),
        "emb": z @ basis + 0.1 * rng.normal(size=(n, 32)),
    }


def _ref(rng):
    d = _data(rng, 5000)
    return build_reference(
        features={"length": d["length"], "count": d["count"]},
        scores={"score": d["score"]},
        embeddings={"emb": d["emb"]},
        source=SYNTHETIC,
    )


def test_no_shift_stays_quiet_over_many_windows():
    rng = np.random.default_rng(0)
    ref = _ref(rng)
    t = DriftThresholds(window=300)
    judged = [compare(ref, _data(rng, 300), t, rng) for _ in range(40)]
    rate = np.mean([j["drifted"] for j in judged])
    assert rate <= 0.05, rate
    assert all(j["tests"] == 4 for j in judged)


@pytest.mark.parametrize(
    "change, stream",
    [({"shift": 2.0}, "length"), ({"scale": 2.5}, "length"), ({"emb_shift": 1.5}, "emb")],
)
def test_a_shift_fires_on_the_stream_that_moved(change, stream):
    rng = np.random.default_rng(1)
    ref = _ref(rng)
    out = compare(ref, _data(rng, 300, **change), DriftThresholds(window=300), rng)
    assert out["drifted"] and stream in out["moved"], out["moved"]
    assert "score" not in out["moved"] and "count" not in out["moved"]


def test_reference_round_trip_and_psi(tmp_path):
    rng = np.random.default_rng(2)
    ref = _ref(rng)
    back = DriftReference.load(ref.save(tmp_path / "ref.json"))
    live = _data(rng, 300, shift=1.0)
    t = DriftThresholds(window=300)
    a = compare(ref, live, t, np.random.default_rng(5))
    b = compare(back, live, t, np.random.default_rng(5))
    assert a == b
    assert psi(np.array([0.5, 0.5]), np.array([50, 50])) == pytest.approx(0.0)
    assert psi(np.array([0.5, 0.5]), np.array([90, 10])) > 0.3


def test_monitor_judges_tumbling_windows_and_calls_back_once_moved():
    rng = np.random.default_rng(3)
    alarms = []
    mon = DriftMonitor(_ref(rng), DriftThresholds(window=100, history=3), on_drift=alarms.append)
    quiet = _data(rng, 200)
    for i in range(200):
        mon.observe(
            length=quiet["length"][i],
            count=quiet["count"][i],
            emb=quiet["emb"][i],
            score=quiet["score"][i],
            unknown=1.0,
        )
    assert mon.drifted_windows == 0 and not alarms
    moved = _data(rng, 300, shift=3.0)
    judged = [mon.observe(length=v) for v in moved["length"]]
    assert [j is not None for j in judged].count(True) == 3
    assert alarms and all("length" in a["moved"] for a in alarms)
    rep = mon.report()
    assert rep["observed"] == 500 and rep["windows_judged"] == 5 and len(rep["windows"]) == 3
    assert rep["rolling"]["drifted"] and rep["ignored_values"] == 200
    assert all(len(d) <= 100 for d in mon._live.values())  # bounded


def test_monitor_without_reference_says_so():
    mon = DriftMonitor(None)
    assert mon.observe(x=1.0) is None
    assert mon.report() == {"enabled": False, "reason": "the artifact has no drift reference"}


def test_reference_needs_data_and_unique_names():
    with pytest.raises(ValueError, match="at least 2"):
        build_reference(features={"x": [1.0]})
    with pytest.raises(ValueError, match="appears as"):
        build_reference(features={"x": [1.0, 2.0]}, scores={"x": [1.0, 2.0]})
    with pytest.raises(ValueError, match="min_window"):
        DriftThresholds(window=10, min_window=20)
