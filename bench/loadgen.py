"""Bounded loopback load for the serving benchmarks: ``concurrency`` clients, each with its
own keep-alive session, send ``n`` requests after a short warm-up; latency percentiles; where
each request's time went (the apps' metrics) and the CPU each process spent."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import psutil
import ray
import requests
from prometheus_client.parser import text_string_to_metric_families
from ray import serve

from apps.auth import KeyStore
from mlsd.procs import free_port
from mlsd.state import init_store


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


# where a request's time goes: the apps' own metrics on Ray's Prometheus endpoint -------------
PROXY = "ray_serve_http_request_latency_ms"  # the proxy: request in -> response out
REPLICA = "ray_serve_deployment_processing_latency_ms"  # each deployment's handler
STAGE = "ray_mlsd_stage_latency_ms"  # the app's own steps (deployments/metrics.py: stage)


def latency_totals(metrics_url: str, application: str) -> dict[str, tuple[float, float]]:
    """(sum ms, count) of every latency histogram series of ``application``, summed over
    replicas: ``proxy``, ``replica:<Deployment>`` and ``stage:<name>``."""
    text = requests.get(metrics_url, timeout=10).text
    out: dict[str, list[float]] = {}
    for fam in text_string_to_metric_families(text):
        if fam.name not in (PROXY, REPLICA, STAGE):
            continue
        for s in fam.samples:
            if s.labels.get("application") != application or s.name[-4:] not in ("_sum", "ount"):
                continue
            if fam.name == PROXY:
                key = "proxy"
            elif fam.name == REPLICA:
                key = f"replica:{s.labels.get('deployment')}"
            else:
                key = f"stage:{s.labels.get('stage')}"
            acc = out.setdefault(key, [0.0, 0.0])
            acc[0 if s.name.endswith("_sum") else 1] += s.value
    return {k: (v[0], v[1]) for k, v in out.items()}


def stage_means(
    metrics_url: str, application: str, before: dict, requests_sent: int, timeout: float = 60.0
) -> dict[str, float]:
    """Mean ms per request of each series since ``before`` (a :func:`latency_totals`), once
    the proxy and the ingress (the replica that saw the most) have exported all
    ``requests_sent`` and two reads a period apart agree: each process exports on its own
    period (HAProxy's proxy series at once, replicas every second or so), and a snapshot taken
    between two exports would set one stage's time against another's fewer requests."""
    deadline = time.time() + timeout

    def done(now: dict, prefix: str) -> float:
        return max(
            (c - before.get(k, (0, 0))[1] for k, (_, c) in now.items() if k.startswith(prefix)),
            default=0.0,
        )

    last = None
    while True:
        now = latency_totals(metrics_url, application)
        complete = min(done(now, "proxy"), done(now, "replica:")) >= requests_sent
        if (complete and now == last) or time.time() > deadline:
            break
        last = now
        time.sleep(2)
    means = {}
    for k, (s, c) in now.items():
        s0, c0 = before.get(k, (0.0, 0.0))
        if c > c0:
            means[k] = (s - s0) / (c - c0)
    return means


def cpu_seconds() -> dict[str, float]:
    """CPU seconds (user + system) so far of every process on this machine, by what it is:
    Ray names its workers (``ray::ServeReplica:<app>:<Deployment>``, ``ray::ProxyActor``);
    the rest by executable (raylet, gcs_server, python: this load generator)."""
    out: dict[str, float] = {}
    for p in psutil.process_iter(["name", "cmdline", "cpu_times"]):
        try:
            cmd = p.info["cmdline"] or []
            t = p.info["cpu_times"]
        except (psutil.Error, TypeError):
            continue
        if t is None:
            continue
        head = cmd[0] if cmd else (p.info["name"] or "?")
        if head.startswith("ray::"):
            key = head.split(" ")[0]
        elif p.pid == os.getpid():
            key = "load generator (this process)"
        else:
            key = os.path.basename(head.split(" ")[0])
        out[key] = out.get(key, 0.0) + t.user + t.system
    return out


def cpu_per_request(before: dict[str, float], after: dict[str, float], n: int) -> dict:
    """CPU ms per request of each kind of process between two :func:`cpu_seconds`."""
    d = {k: (after[k] - before.get(k, 0.0)) * 1e3 / n for k in after}
    return dict(sorted(((k, v) for k, v in d.items() if v >= 0.05), key=lambda kv: -kv[1]))


WARM_UP = 20  # requests http_load sends before it times (they are in the metrics too)


class ServeBench:
    """A local Ray + Serve as ``make serve`` runs them (the Makefile's Serve settings, 2 CPUs,
    metrics on a Prometheus endpoint), an API key store of its own, and the rows of a serving
    benchmark: each HTTP load with where its time went (:func:`stage_means`) and the CPU every
    process spent on it (:func:`cpu_per_request`)."""

    def __init__(self, work: str, scopes: str = "search", num_cpus: int = 2, settle_s: float = 5.0):
        os.environ.setdefault("RAY_TMPDIR", os.path.join(work, "ray"))
        self.keys = os.path.join(work, "keys.sqlite")
        init_store(self.keys)
        self.token = KeyStore(self.keys).create("bench", scopes, note="bench")
        self.auth = {"Authorization": f"Bearer {self.token}"}
        port = free_port()
        self.metrics_url = f"http://127.0.0.1:{port}/metrics"
        ray.init(
            address="local",
            num_cpus=num_cpus,
            include_dashboard=False,
            log_to_driver=False,
            _metrics_export_port=port,
        )
        self.port = free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": self.port})
        self.settle_s = settle_s
        self.rows: list[dict] = []
        self.stages: dict[str, dict[str, float]] = {}
        self.cpu: dict[str, dict[str, float]] = {}

    def url(self, route_prefix: str) -> str:
        return f"http://127.0.0.1:{self.port}{route_prefix}"

    def load(
        self,
        app: str,
        send: Callable[[requests.Session, int], requests.Response],
        n: int,
        concurrency: int,
        name: str,
    ) -> dict:
        """One HTTP row against the deployed application ``app``, once Serve has settled
        after deploying it (its controller is busy for a few seconds); any failed request
        stops the benchmark (a ratio over errors would be meaningless)."""
        time.sleep(self.settle_s)
        before = latency_totals(self.metrics_url, app)
        cpu0 = cpu_seconds()
        row = http_load(send, n, concurrency, name)
        self.cpu[name] = cpu_per_request(cpu0, cpu_seconds(), n + min(WARM_UP, n))
        if row["errors"]:
            raise SystemExit(f"{name}: {row['errors']} of {row['requests']} requests failed")
        self.stages[name] = stage_means(self.metrics_url, app, before, n + min(WARM_UP, n))
        self.rows.append(row)
        return row

    def close(self) -> None:
        serve.shutdown()
        ray.shutdown()

    def report(self, ingress: str | None, stages: list[tuple[str, str | None]]) -> None:
        """The rows against the first (the in-process pipeline; ``ingress`` None: no anchor,
        no stages), then for each HTTP row where the time went: ``stages`` are the ingress's
        own (``mlsd_stage_latency_ms``) in order, each with the deployment it calls (None:
        work in the ingress itself), and the CPU each process spent."""
        base = self.rows[0] if ingress is not None else None
        ratio = " req/s vs in-process |" if base else ""
        print(f"| setup | requests | errors | p50 ms | p99 ms | req/s |{ratio}")
        print("| --- " * (7 if base else 6) + "|")
        for r in self.rows:
            row = (
                f"| {r['setup']} | {r['requests']} | {r['errors']} | {r['p50_ms']:.1f} | "
                f"{r['p99_ms']:.1f} | {r['rps']:.1f} |"
            )
            print(row + (f" {r['rps'] / base['rps']:.2f}x |" if base else ""))
        for name, means in self.stages.items():
            if ingress is not None:
                print(f"\nwhere the time went, mean ms per request: {name}")
                print("\n".join(breakdown(means, ingress, stages)))
            else:
                print(f"\n{name}")
            print("  CPU ms per request, by process:")
            for k, v in self.cpu[name].items():
                print(f"    {k:58s} {v:6.2f}")
            print(f"    {'all':58s} {sum(self.cpu[name].values()):6.2f}")


def breakdown(means: dict[str, float], ingress: str, stages: list[tuple[str, str | None]]):
    """Mean ms per request: the proxy's whole answer, the ingress handler inside it, each of
    the ingress's stages and, for a stage that calls a deployment, that replica's handler
    time and what is left for the hop (routing, (de)serialisation, queueing)."""
    proxy, handler = means.get("proxy", 0.0), means.get(f"replica:{ingress}", 0.0)
    lines = [
        f"  proxy, whole answer            {proxy:7.2f}",
        f"    proxy's own share            {proxy - handler:7.2f}  (routing, ASGI to the ingress)",
        f"    {ingress + ' handler':28s} {handler:7.2f}",
    ]
    inner = 0.0
    for st, deployment in stages:
        v = means.get(f"stage:{st}")
        if v is None:
            continue
        inner += v
        lines.append(f"      stage {st:22s} {v:7.2f}")
        r = means.get(f"replica:{deployment}") if deployment else None
        if r is not None:
            lines.append(f"        {deployment:26s} {r:7.2f}  (hop: {v - r:.2f})")
    lines.append(
        f"      rest of the handler          {handler - inner:7.2f}  (auth, parsing, JSON)"
    )
    return lines
