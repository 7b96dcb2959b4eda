"""Soak: bounded mixed load over every app on loopback, one replica SIGKILLed mid-run.

    python -m bench.soak [--duration 180] [--concurrency 8] [--kill visual_search:Retriever]

Starts ``serve run serve_config.yaml`` (the user's path: every app, the demo artifacts, the
development token of ``make dev-token``), waits for every app's ``/healthz``, then
``concurrency`` callers send a fixed mix for ``duration`` seconds: visual-search searches and
adds, recommendations and feedback events, video searches, harmful-content posts, blurring
uploads and health checks. Half way, the replica named by ``--kill`` is killed by PID
(SIGKILL, its process title ``ray::ServeReplica:<app>:<deployment>``). Reported per route:
requests, errors (non-2xx, by status), p50 / p99 latency; the recovery time (kill -> the
first 10 searches in a row answered 200, after a replacement replica is up); and the
acknowledged writes lost: every added image and event that got its id must be in the durable
logs afterwards, and a sample of the added images must be found by searching with them.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
import requests
import yaml
from sqlalchemy import select

from mlsd.blurring import data as bdata
from mlsd.data import fashion_mnist as fm
from mlsd.harmful_content import data as hdata
from mlsd.procs import kill, pids_of, stop_group
from mlsd.recommendation.events import EventLog
from mlsd.state.schema import rec_events
from mlsd.visual_search.catalogue import CatalogueLog
from tests.conftest import jpeg_bytes, png_bytes

ROOT = Path(__file__).resolve().parents[1]
T = TypeVar("T")
MIX = {  # route -> weight (share of requests)
    "visual-search search": 30, "visual-search add": 8, "recommendations get": 25,
    "recommendations event": 12, "video-search search": 10, "harmful-content post": 8,
    "blurring image": 2, "healthz": 5,
}  # fmt: skip
QUERIES = ["a man walking", "a busy street", "waves on a beach", "a bird", "traffic at night",
           "people talking", "a dog running", "cars on a road"]  # fmt: skip


class Soak:
    def __init__(self, base: str, token: str, seed: int = 0):

        self.base, self.headers = base, {"Authorization": f"Bearer {token}"}
        self.rng = random.Random(seed)
        test = fm.load("test").images
        self.queries = [png_bytes(im) for im in test[:300]]
        self.new_images = fm.load("train").images[:5000]
        photos = (bdata.faces("val") + bdata.plates("val"))[:20]
        self.photos = [jpeg_bytes(bdata.load_rgb(e.path)[:480, :640]) for e in photos]
        self.posts = [p.text for p in hdata.all_posts("val")[:500]]
        self.lock = threading.Lock()
        self.lat: dict[str, list[float]] = defaultdict(list)
        self.errors: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
        self.search_log: list[tuple[float, int]] = []  # (time, status) of vs searches
        self.acked_images: list[tuple[int, bytes]] = []
        self.acked_events: list[int] = []
        self.added = 0

    def send(self, s: requests.Session, route: str) -> requests.Response:
        """One request of the mix (a cluster soak sends it through a chosen proxy)."""
        return self._one(s, route, self.base)

    def _one(self, s: requests.Session, route: str, base: str) -> requests.Response:
        b, r = base, self.rng
        if route == "visual-search search":
            data = r.choice(self.queries)
            return s.post(
                f"{b}/visual-search/search",
                params={"k": 10},
                files={"image": ("q.png", data)},
                timeout=120,
            )
        if route == "visual-search add":
            with self.lock:
                self.added += 1
                img = self.new_images[self.added % len(self.new_images)].copy()
            img[0, : self.added % 28] = 255  # unique bytes (and a distinct near-duplicate hash)
            data = png_bytes(img)
            resp = s.post(
                f"{b}/visual-search/images", files={"image": ("a.png", data)}, timeout=120
            )
            if resp.status_code == 200:
                with self.lock:
                    self.acked_images.append((resp.json()["image_id"], data))
            return resp
        if route == "recommendations get":
            return s.get(
                f"{b}/recommendations/users/{r.randint(1, 943)}", params={"k": 10}, timeout=120
            )
        if route == "recommendations event":
            ev = {
                "user_id": r.randint(1, 943),
                "video_id": r.randint(1, 1682),
                "event": "watch",
                "timestamp": int(time.time()),
            }
            resp = s.post(f"{b}/recommendations/events", json=ev, timeout=120)
            if resp.status_code == 201:
                with self.lock:
                    self.acked_events.append(resp.json()["event_id"])
            return resp
        if route == "video-search search":
            return s.get(f"{b}/video-search/search", params={"q": r.choice(QUERIES)}, timeout=120)
        if route == "harmful-content post":
            return s.post(
                f"{b}/harmful-content/posts", json={"text": r.choice(self.posts)}, timeout=120
            )
        if route == "blurring image":
            return s.post(
                f"{b}/blurring/images",
                files={"image": ("p.jpg", r.choice(self.photos))},
                timeout=120,
            )
        app = r.choice(
            ["visual-search", "recommendations", "video-search", "blurring", "harmful-content"]
        )
        return s.get(f"{b}/{app}/healthz", timeout=120)

    def caller(self, deadline: float) -> None:
        s = requests.Session()
        s.headers.update(self.headers)
        routes, weights = list(MIX), list(MIX.values())
        while time.time() < deadline:
            with self.lock:
                route = self.rng.choices(routes, weights)[0]
            t0 = time.perf_counter()
            try:
                status = self.send(s, route).status_code
            except requests.RequestException:
                status = 599  # no answer at all
            ms = (time.perf_counter() - t0) * 1e3
            with self.lock:
                self.lat[route].append(ms)
                if not 200 <= status < 300:
                    self.errors[route][status] += 1
                if route == "visual-search search":
                    self.search_log.append((time.time(), status))


def drive(soak: Soak, duration: float, concurrency: int, halfway: Callable[[float], T]):
    """``concurrency`` callers for ``duration`` seconds; ``halfway(deadline)`` runs half way
    (the fault) while they go on; -> (seconds of load, its start, what ``halfway`` returned)."""
    deadline = time.time() + duration
    threads = [threading.Thread(target=soak.caller, args=(deadline,)) for _ in range(concurrency)]
    t_start = time.time()
    for t in threads:
        t.start()
    time.sleep(duration / 2)
    result = halfway(deadline)
    for t in threads:
        t.join()
    return time.time() - t_start, t_start, result


def lost_writes(soak: Soak, images_log: str, events_log: str, sample: int = 20) -> dict:
    """Acknowledged writes missing from the durable logs (and added images not found)."""

    log = CatalogueLog(images_log)
    in_log = {img.meta.image_id for _, img in log.since(0)}
    log.close()
    lost_images = [i for i, _ in soak.acked_images if i not in in_log]
    events = EventLog(events_log)
    with events.db.read() as c:
        seqs = set(c.execute(select(rec_events.c.seq)).scalars())
    events.close()
    lost_events = [e for e in soak.acked_events if e not in seqs]
    s = requests.Session()
    s.headers.update(soak.headers)
    not_found = 0
    for image_id, data in random.Random(1).sample(
        soak.acked_images, min(sample, len(soak.acked_images))
    ):
        hits = s.post(
            f"{soak.base}/visual-search/search",
            params={"k": 5},
            files={"image": ("q.png", data)},
            timeout=120,
        ).json()["results"]
        not_found += image_id not in [h["image_id"] for h in hits]
    return {
        "acked_images": len(soak.acked_images),
        "acked_events": len(soak.acked_events),
        "lost_images": len(lost_images),
        "lost_events": len(lost_events),
        "sampled_images_not_found_by_search": not_found,
    }


def recovery_s(log: list[tuple[float, int]], killed_at: float, replaced_at: float | None) -> float:
    """Kill -> the first 10 searches in a row answered 200 that started after a replacement."""
    after = [(t, st) for t, st in sorted(log) if t >= (replaced_at or killed_at)]
    run = 0
    for t, st in after:
        run = run + 1 if st == 200 else 0
        if run == 10:
            return t - killed_at
    return float("nan")


def start_serve(config: str, base: str, timeout: float) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_USAGE_STATS_ENABLED": "0"}
    env.setdefault("RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH", "apps.limits:proxy_middlewares")
    serve = str(Path(sys.executable).with_name("serve"))  # the venv's Serve CLI
    proc = subprocess.Popen(
        [serve, "run", config],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    apps = ["visual-search", "recommendations", "video-search", "blurring", "harmful-content"]
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"serve run exited with {proc.returncode}")
        try:
            if all(requests.get(f"{base}/{a}/healthz", timeout=5).status_code == 200 for a in apps):
                return proc
        except requests.RequestException:
            pass
        time.sleep(3)
    stop_group(proc)
    raise RuntimeError(f"the apps were not up after {timeout:.0f} s")


def run(a: argparse.Namespace) -> dict:
    cfg = yaml.safe_load((ROOT / a.config).read_text())
    apps = {x["name"]: x for x in cfg["applications"]}

    def store(url: str) -> str:  # relative paths are the repository's, as for serve run
        return url if "://" in url else str(ROOT / url)

    images_log = store(apps["visual_search"]["args"]["live_log"])
    events_log = store(apps["recommendation"]["args"]["events_log"])
    base = f"http://127.0.0.1:{cfg['http_options']['port']}"
    token = (ROOT / a.token).read_text().strip()
    proc = start_serve(a.config, base, a.startup_timeout) if a.start else None
    try:
        soak = Soak(base, token, a.seed)
        app, dep = a.kill.split(":")
        title = f"ray::ServeReplica:{app}:{dep}"
        victims = pids_of(title)

        def kill_replica(deadline: float) -> tuple[float, float | None]:
            killed_at, replaced_at = time.time(), None
            for pid in victims:
                kill(pid)
            while time.time() < deadline and replaced_at is None:
                if set(pids_of(title)) - set(victims):
                    replaced_at = time.time()
                time.sleep(0.2)
            return killed_at, replaced_at

        wall, _, (killed_at, replaced_at) = drive(soak, a.duration, a.concurrency, kill_replica)
        lost = lost_writes(soak, images_log, events_log)
    finally:
        if proc is not None:
            stop_group(proc)
    routes = per_route(soak)
    return {
        "duration_s": wall,
        "concurrency": a.concurrency,
        "killed": a.kill,
        "killed_pids": victims,
        "replacement_up_s": (replaced_at - killed_at) if replaced_at else None,
        "recovery_s": recovery_s(soak.search_log, killed_at, replaced_at),
        "requests": sum(r["requests"] for r in routes.values()),
        "errors": sum(r["errors"] for r in routes.values()),
        "routes": routes,
        "writes": lost,
    }


def per_route(soak: Soak) -> dict:
    """Requests, errors (by status) and p50 / p99 latency of each route of the mix."""
    routes = {}
    for route, lat in sorted(soak.lat.items()):
        q = np.percentile(lat, [50, 99])
        routes[route] = {
            "requests": len(lat),
            "errors": sum(soak.errors[route].values()),
            "errors_by_status": dict(soak.errors[route]),
            "p50_ms": float(q[0]),
            "p99_ms": float(q[1]),
        }
    return routes


def _table(out: dict) -> str:
    lines = ["| route | requests | errors | p50 ms | p99 ms |", "|---|---|---|---|---|"]
    for route, r in out["routes"].items():
        lines.append(
            f"| {route} | {r['requests']} | {r['errors']} | {r['p50_ms']:.0f} | {r['p99_ms']:.0f} |"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--config", default="serve_config.yaml")
    p.add_argument("--duration", type=float, default=180.0, help="seconds of load")
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--kill", default="visual_search:Retriever", help="app:deployment")
    p.add_argument("--token", default="var/auth/dev-token")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--startup-timeout", type=float, default=600.0)
    p.add_argument(
        "--no-start",
        dest="start",
        action="store_false",
        help="use the Serve already running on the config's port",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    out = run(parse_args(argv))
    print(json.dumps(out, indent=2))
    print(_table(out))


if __name__ == "__main__":
    main()
