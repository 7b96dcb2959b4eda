"""Drift tests' one protocol for every app: observations go through ``mlsd.drift.DriftMonitor``
exactly as the serving path sends them, one call per served request."""

from __future__ import annotations

from collections.abc import Iterable

from mlsd.drift import DriftMonitor, DriftReference, DriftThresholds


def monitor_over(
    reference: DriftReference | None, observations: Iterable[dict], window: int, **kw
) -> DriftMonitor:
    """Feed every observation; the monitor has judged one window per ``window`` of them."""
    assert reference is not None, "the artifact has no drift reference"
    mon = DriftMonitor(reference, DriftThresholds(window=window, history=1000, **kw))
    for obs in observations:
        mon.observe(**obs)
    return mon


def false_alarm_rate(mon: DriftMonitor) -> float:
    judged = list(mon.windows)
    assert judged, "no window was judged"
    rate = sum(w["drifted"] for w in judged) / len(judged)
    print(f"false alarms: {rate:.3f} over {len(judged)} windows of {mon.t.window}")
    return rate


def moved(mon: DriftMonitor) -> set[str]:
    """Streams that moved in every judged window."""
    judged = list(mon.windows)
    assert judged, "no window was judged"
    return set.intersection(*(set(w["moved"]) for w in judged))
