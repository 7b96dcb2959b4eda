"""Bounded loopback load for the serving benchmarks: ``concurrency`` clients, each with its
own keep-alive session, send ``n`` requests after a short warm-up; latency percentiles."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import requests


def summary(name: str, lat_ms: list[float], wall: float, errors: int = 0) -> dict:
    q = np.percentile(lat_ms, [50, 99])
    return {
        "setup": name,
        "requests": len(lat_ms),
        "errors": errors,
        "p50_ms": float(q[0]),
        "p99_ms": float(q[1]),
        "rps": len(lat_ms) / wall,
    }


def http_load(
    send: Callable[[requests.Session, int], requests.Response],
    n: int,
    concurrency: int,
    name: str,
) -> dict:
    """send(session, i) issues request i; a non-200 answer counts as an error."""
    sessions = [requests.Session() for _ in range(concurrency)]

    def one(i: int) -> tuple[float, bool]:
        s = time.perf_counter()
        r = send(sessions[i % concurrency], i)
        return (time.perf_counter() - s) * 1e3, r.status_code == 200

    with ThreadPoolExecutor(concurrency) as pool:  # warm-up
        list(pool.map(one, range(min(20, n))))
    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        out = list(pool.map(one, range(n)))
    wall = time.perf_counter() - t0
    return summary(name, [o[0] for o in out], wall, sum(1 for o in out if not o[1]))
