"""What an idle ``make serve`` costs: CPU of every process it started while nothing calls it.

Starts ``make serve`` (the five apps of serve_config.yaml, from the artifacts already in the
store: run ``make artifacts`` first, or this measures training), waits until every app's
``/healthz`` answers 200, lets it settle, then samples the CPU time of every process in the
tree (the demo driver, Ray's GCS, raylet, dashboard, agents, Serve's controller, proxy and
replicas) over ``--seconds``. Prints % of one core per kind of process and in all, then stops
Serve with SIGTERM (as Ctrl-C does).

    python -m bench.idle_cost [--seconds 60]
    RAY_SERVE_CONTROL_LOOP_INTERVAL_S=0.1 RAY_SERVE_METRICS_EXPORT_INTERVAL_MS=100 \\
        python -m bench.idle_cost          # Ray's own periods instead of the Makefile's

Needs port 8000 free (serve_config.yaml's).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time

import psutil
import requests
import yaml

from mlsd.procs import stop_group

ROUTES_FROM = "serve_config.yaml"


def tree(root: psutil.Process) -> list[psutil.Process]:
    try:
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return [root]


def kind(p: psutil.Process) -> str:
    """Ray names its workers (``ray::ServeReplica:<app>:<Deployment>``); the rest by program."""
    try:
        cmd = p.cmdline()
    except psutil.Error:
        return "?"
    head = cmd[0] if cmd else p.name()
    if head.startswith("ray::"):
        return head.split(" ")[0]
    for arg in cmd[:3]:
        base = os.path.basename(arg)
        if base.endswith(".py"):
            return base
        if base in ("gcs_server", "raylet", "make"):
            return base
    if "-m" in cmd:
        return cmd[cmd.index("-m") + 1]
    return os.path.basename(head)


def cpu(procs: list[psutil.Process]) -> dict[int, tuple[str, float]]:
    out = {}
    for p in procs:
        try:
            t = p.cpu_times()
            out[p.pid] = (kind(p), t.user + t.system)
        except psutil.Error:
            continue
    return out


def wait_ready(routes: list[str], timeout: float) -> float:
    t0 = time.time()
    while time.time() - t0 < timeout:
        ok = 0
        for r in routes:
            try:
                ok += requests.get(f"http://127.0.0.1:8000{r}/healthz", timeout=5).ok
            except requests.RequestException:
                pass
        if ok == len(routes):
            return time.time() - t0
        time.sleep(3)
    raise SystemExit(f"not every app answered /healthz within {timeout:.0f} s")


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--seconds", type=float, default=60.0, help="idle time measured")
    p.add_argument("--settle", type=float, default=30.0, help="wait after every app is up")
    p.add_argument("--ready-timeout", type=float, default=600.0)
    a = p.parse_args(argv)
    with open(ROUTES_FROM) as f:
        routes = [app["route_prefix"] for app in yaml.safe_load(f)["applications"]]
    os.makedirs("var/bench", exist_ok=True)
    log = open("var/bench/idle_cost_serve.log", "w")  # noqa: SIM115 (closed below)
    serve = subprocess.Popen(
        ["make", "serve"], stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    root = psutil.Process(serve.pid)
    try:
        up = wait_ready(routes, a.ready_timeout)
        time.sleep(a.settle)
        before = cpu(tree(root))
        time.sleep(a.seconds)
        after = cpu(tree(root))
    finally:
        stop_group(serve, term_wait_s=120)
        log.close()
    per_kind: dict[str, float] = {}
    for pid, (k, t) in after.items():
        if pid in before:
            per_kind[k] = per_kind.get(k, 0.0) + (t - before[pid][1]) / a.seconds * 100
    rows = dict(sorted(per_kind.items(), key=lambda kv: -kv[1]))
    periods = ("RAY_SERVE_CONTROL_LOOP_INTERVAL_S", "RAY_SERVE_METRICS_EXPORT_INTERVAL_MS")
    env = {k: os.environ.get(k, "Makefile") for k in periods}
    print(f"idle make serve, {len(routes)} apps up after {up:.0f} s; {env}")
    print(f"CPU over {a.seconds:.0f} s idle, % of one core:")
    for k, v in rows.items():
        if v >= 0.05:
            print(f"  {k:56s} {v:6.2f}")
    total = sum(rows.values())
    print(f"  {'all':56s} {total:6.2f}")
    return {"total_pct_of_a_core": total, "by_process": rows, "env": env}


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
