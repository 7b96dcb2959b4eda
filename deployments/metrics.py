"""The apps' own Prometheus metrics, beside Ray Serve's built-in ones (request counts,
latencies, queue lengths, replicas): exported on Ray's metrics endpoint (``ray start
--metrics-export-port``, scraped by Prometheus; ``ops/grafana/mlsd.json`` is the dashboard).
Names carry Ray's ``ray_`` prefix there; Serve adds the application, deployment and replica
tags itself.

- ``mlsd_stage_latency_ms`` (histogram; ``stage``): each step of a request path
- ``mlsd_rejected_inputs`` (counter; ``reason``): 4xx answers by why
- ``mlsd_shadow_outcomes`` (counter; ``outcome``: completed, error, timeout, skipped) and
  ``mlsd_shadow_agreement`` (gauge; the comparison's running mean)
- ``mlsd_drift_windows`` (counter; ``drifted``), ``mlsd_drift_statistic`` (gauge; ``stream``,
  ``statistic``: psi, ks, mmd2, p_value) and ``mlsd_drift_moved`` (gauge 0/1; ``stream``)
- ``mlsd_review_queue_depth`` (gauge; ``status``): harmful content's human-review queue

Metrics are created lazily in the process that records them (a replica, the proxy) and are a
no-op outside Ray, so the pure paths and unit tests never need a cluster.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache

import ray
from ray.serve import metrics

log = logging.getLogger("ray.serve")

LATENCY_MS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 30000]
REASONS = {400: "malformed", 401: "unauthenticated", 403: "forbidden", 404: "not_found",
           409: "conflict", 413: "too_large", 415: "unsupported_media_type", 422: "invalid",
           429: "rate_limited", 503: "overloaded"}  # fmt: skip


@cache
def _metric(kind: str, name: str, description: str, tag_keys: tuple[str, ...]):
    """One metric object per process (created once Ray is up, never cached before)."""

    if kind == "histogram":
        return metrics.Histogram(name, description, boundaries=LATENCY_MS, tag_keys=tag_keys)
    return getattr(metrics, kind.capitalize())(name, description, tag_keys=tag_keys)


def _record(kind: str, name: str, description: str, value: float, **tags: str) -> None:

    if not ray.is_initialized():  # outside Ray: a no-op
        return
    try:
        m = _metric(kind, name, description, tuple(sorted(tags)))
        if kind == "counter":
            m.inc(value, tags=tags)
        elif kind == "gauge":
            m.set(value, tags=tags)
        else:
            m.observe(value, tags=tags)
    except Exception:  # metrics never fail a request
        log.debug("could not record metric %s", name, exc_info=True)


@contextmanager
def stage(name: str) -> Iterator[None]:
    """Time one step of a request path into ``mlsd_stage_latency_ms{stage=name}``."""
    t0 = time.perf_counter()
    try:
        yield
    finally:
        _record(
            "histogram",
            "mlsd_stage_latency_ms",
            "latency of one request stage, ms",
            (time.perf_counter() - t0) * 1e3,
            stage=name,
        )


def rejected(status: int) -> None:
    if 400 <= status < 500 or status == 503:
        _record(
            "counter",
            "mlsd_rejected_inputs",
            "requests answered 4xx (or 503), by reason",
            1,
            reason=REASONS.get(status, f"http_{status}"),
        )


def shadow_outcome(outcome: str, agreement: float | None = None) -> None:
    _record("counter", "mlsd_shadow_outcomes", "mirrored requests by outcome", 1, outcome=outcome)
    if agreement is not None:
        _record(
            "gauge", "mlsd_shadow_agreement", "running mean shadow-vs-primary agreement", agreement
        )


def drift_window(judged: dict) -> None:
    """A judged drift window: its verdict, each stream's statistics and whether it moved."""
    _record(
        "counter",
        "mlsd_drift_windows",
        "judged drift windows",
        1,
        drifted=str(judged["drifted"]).lower(),
    )
    for stream, r in judged["streams"].items():
        for stat in ("psi", "ks", "mmd2", "p_value"):
            if stat in r:
                _record(
                    "gauge",
                    "mlsd_drift_statistic",
                    "last judged window's statistic",
                    float(r[stat]),
                    stream=stream,
                    statistic=stat,
                )
        _record(
            "gauge",
            "mlsd_drift_moved",
            "1 if the stream moved in the last judged window",
            float(r["moved"]),
            stream=stream,
        )


def review_queue(counts: dict[str, int]) -> None:
    for status, n in counts.items():
        _record(
            "gauge",
            "mlsd_review_queue_depth",
            "human-review queue, by status",
            float(n),
            status=status,
        )
