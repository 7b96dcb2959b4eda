"""Soak on a two-node cluster: every app on both nodes, state in PostgreSQL and S3, node B's
raylet SIGKILLed half way.

    python -m bench.soak_cluster [--duration 120] [--concurrency 8] [--store artifacts]

The cluster is ``tests/ray_cluster.py``'s (two ``ray start`` nodes on loopback, node B with
its own disk, the GCS in Redis), the stores real servers on loopback (PostgreSQL with
``fsync=on``, Redis, moto's S3 server; the client is the real s3fs). Every deployment of
``serve_config.yaml``'s five apps runs one replica on each node (``max_replicas_per_node: 1``;
shadows and drift monitors off, to fit two cores), every store pointed at PostgreSQL / S3.

Callers send ``bench.soak``'s mix, spread over both nodes' proxies the way a load balancer
would: a request whose proxy stops answering (node B, after the kill) is sent once more to
the other node, as a load balancer retries a connection refused. Reported: requests, errors,
p50 / p99 per route; connection failures the balancer absorbed; acknowledged writes (image
additions, events) missing from the stores afterwards: must be 0.

``--store`` is a folder of demo artifacts (``make artifacts``); without one, the tests' small
real artifacts are built into a temporary folder (``--tiny``: say so when quoting figures).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import requests
import yaml

from apps.auth import SCOPES, KeyStore
from bench.soak import Soak, _table, drive, lost_writes, per_route
from mlsd.state import ObjectStore, init_store
from tests import conftest as t
from tests.ray_cluster import RayCluster, wait_for
from tests.servers import MotoS3Server, PostgresServer, RedisServer

ROOT = Path(__file__).resolve().parents[1]
STORE_FIELDS = ("live_log", "events_log", "review_queue")
OBJECT_FIELDS = ("object_store", "output_store")


class ClusterSoak(Soak):
    """``bench.soak``'s mix through two proxies behind a (modelled) load balancer."""

    def __init__(self, bases: list[str], token: str, seed: int = 0):
        super().__init__(bases[0], token, seed)
        self.bases, self.down, self.rerouted = bases, set(), 0
        self.turn = 0

    def send(self, s: requests.Session, route: str) -> requests.Response:
        with self.lock:
            self.turn += 1
            live = [b for b in self.bases if b not in self.down] or self.bases
            base = live[self.turn % len(live)]
        try:
            return self._one(s, route, base)
        except requests.ConnectionError:
            with self.lock:  # the balancer's health check takes the node out
                self.down.add(base)
                self.rerouted += 1
                other = next((b for b in self.bases if b != base), base)
            return self._one(s, route, other)


def tiny_store(folder: Path) -> Path:
    """The tests' small real artifacts (built here: a few minutes on two cores)."""
    sys.path.insert(0, str(ROOT))

    t.build_tiny_artifact(folder)
    t.build_tiny_recommender(folder, "v1")
    t.build_video_search_store(folder)
    t.build_tiny_harmful(folder)
    return folder


def cluster_config(config: dict, store: str, state: dict) -> list[dict]:
    """``serve_config.yaml``'s applications with every store on the shared servers and every
    deployment on both nodes."""
    apps = []
    for app in config["applications"]:
        args = dict(app["args"], artifact_store=store, shadow=None, drift=None)
        args["auth"] = {"key_store": state["db"]}
        for f in STORE_FIELDS:
            if f in args:
                args[f] = state["db"]
        if "live_log" in args:  # visual and video search keep uploads' bytes
            args["object_store"] = f"s3://mlsd/{app['name']}/uploads"
        if "output_store" in args:  # blurring; the packaged face detector (no artifact)
            args["output_store"] = f"s3://mlsd/{app['name']}/outputs"
            args["detector"] = {"members": [{"kind": "yunet", "threshold": 0.5}]}
        deployments = [
            {**d, "num_replicas": 2, "max_replicas_per_node": 1}
            for d in app.get("deployments", [])
            if not d["name"].startswith(("Shadow", "Drift"))
        ]
        apps.append({**app, "args": args, "deployments": deployments})
    return apps


def run(a: argparse.Namespace) -> dict:
    sys.path.insert(0, str(ROOT))

    tmp = Path(tempfile.mkdtemp(prefix="mlsd-soak-"))
    store = a.store if a.store and Path(a.store, "visual_search").exists() else None
    if store is None:
        print("no demo artifacts: building the tests' small ones", file=sys.stderr)
        store = str(tiny_store(tmp / "artifacts"))
    config = yaml.safe_load((ROOT / "serve_config.yaml").read_text())
    with PostgresServer(fsync=True) as pg, RedisServer() as redis, MotoS3Server() as s3:
        s3.create_bucket("mlsd")
        os.environ.update(s3.env())
        state = {"db": str(init_store(pg.create_database("mlsd")))}
        apps = cluster_config(config, store, state)
        for app in apps:
            for f in OBJECT_FIELDS:
                if f in app["args"]:
                    ObjectStore(app["args"][f], create=True)
        token = KeyStore(state["db"]).create("soak", SCOPES)
        rc = RayCluster(tmp / "var", redis=redis.address, env=s3.env())
        try:
            rc.start_head().start_worker()
            rc.deploy(apps)
            bases = [rc.url("a", ""), rc.url("b", "")]
            for base in bases:
                for app in apps:
                    route = app["route_prefix"]
                    wait_for(lambda r=route, b=base: _up(b + r), 900, f"{route} via {base}")
            soak = ClusterSoak(bases, token, a.seed)
            wall, t0, (killed_at, raylet) = drive(
                soak,
                a.duration,
                a.concurrency,
                lambda _: (time.time(), rc.kill(rc.worker, "raylet")),
            )
            killed_at -= t0
            lost = lost_writes(soak, state["db"], state["db"])  # soak.base: node A's proxy
        finally:
            rc.stop()
            shutil.rmtree(tmp, ignore_errors=True)
    routes = per_route(soak)
    return {
        "duration_s": wall,
        "concurrency": a.concurrency,
        "artifacts": store,
        "killed": f"node B's raylet (pid {raylet}) at {killed_at:.0f} s",
        "rerouted_by_balancer": soak.rerouted,
        "requests": sum(r["requests"] for r in routes.values()),
        "errors": sum(r["errors"] for r in routes.values()),
        "routes": routes,
        "writes": lost,
    }


def _up(url: str) -> bool:
    try:
        return requests.get(f"{url}/healthz", timeout=5).status_code == 200
    except requests.RequestException:
        return False


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--duration", type=float, default=120.0)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--store", default="artifacts", help="demo artifacts (else the tests' small)")
    p.add_argument("--seed", type=int, default=0)
    out = run(p.parse_args(argv))
    print(json.dumps(out, indent=2))
    print(_table(out))


if __name__ == "__main__":
    main()
