"""A lost replica costs latency, not errors; autoscaling is seen to work, not only configured.

- SIGKILL (by PID) of the recommendation app's CandidateGeneration replica while requests
  flow: every idempotent request answers 200 (the ingress retries once; Serve routes the
  retry to the replacement), and the replacement takes traffic after.
- A Ranking deployment with ``min_replicas: 1, max_replicas: 2`` scales up under a bounded
  load from 8 concurrent callers and back down to 1 once the load stops.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from ray import serve

from apps.recommendation import RecommendationArgs, build_app
from deployments.recommendation import Ranking
from mlsd.artifacts import ArtifactStore
from mlsd.procs import kill, pids_of
from mlsd.recommendation.artifact import load_recommender
from mlsd.recommendation.pipeline import generate_candidates
from tests.conftest import new_store
from tests.serve.http import api

pytestmark = [pytest.mark.serve, pytest.mark.slow]


def _running(app: str, deployment: str) -> int:

    status = serve.status().applications[app].deployments[deployment]
    return int(status.replica_states.get("RUNNING", 0))


def _wait(pred, timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def rec_app(serve_instance, rec_store, tmp_path_factory):

    args = RecommendationArgs(
        artifact_store=str(rec_store),
        events_log=new_store(tmp_path_factory.mktemp("resilience") / "events.sqlite"),
    )
    serve.run(build_app(args), name="rec_kill", route_prefix="/rec-kill")
    yield f"{serve_instance}/rec-kill"
    serve.delete("rec_kill")


def test_a_killed_replica_costs_latency_not_errors(rec_app):
    (pid,) = pids_of("ray::ServeReplica:rec_kill:CandidateGeneration")
    statuses: list[int] = []
    stop = threading.Event()

    def load(worker: int) -> None:
        i = 0
        while not stop.is_set():
            user = 1 + (worker * 97 + i) % 900
            r = api.get(f"{rec_app}/users/{user}", params={"k": 5}, timeout=120)
            statuses.append(r.status_code)
            i += 1

    threads = [threading.Thread(target=load, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    _wait(lambda: len(statuses) >= 20, 60, "requests before the kill")
    kill(pid)
    before = len(statuses)
    _wait(
        lambda: pids_of("ray::ServeReplica:rec_kill:CandidateGeneration") not in ([], [pid]),
        120,
        "a replacement replica",
    )
    _wait(lambda: len(statuses) >= before + 40, 120, "requests after the kill")
    stop.set()
    for t in threads:
        t.join()
    assert statuses.count(200) == len(statuses), {s: statuses.count(s) for s in set(statuses)}


def test_autoscaling_scales_up_under_load_and_back_down(serve_instance, rec_store):

    store = ArtifactStore(rec_store)
    autoscaling = {
        "min_replicas": 1,
        "max_replicas": 2,
        "initial_replicas": 1,
        "target_ongoing_requests": 1,
        "upscale_delay_s": 1,
        "downscale_delay_s": 3,
        "metrics_interval_s": 0.5,
        "look_back_period_s": 2,
    }
    app = Ranking.options(
        name="Ranking", autoscaling_config=autoscaling, ray_actor_options={"num_cpus": 0.25}
    ).bind(store.spec(), "recommendation", "latest", "torch")
    handle = serve.run(app, name="rank_scale", route_prefix=None)
    rec = load_recommender(store.load("recommendation"))
    cands = generate_candidates(rec.cg, rec.history, 1, 30)
    req = cands.rank_request(int(rec.history.ts.max()) + 1)
    assert _running("rank_scale", "Ranking") == 1
    stop = threading.Event()

    def load() -> None:  # bounded: 8 callers, one request each at a time
        while not stop.is_set():
            handle.rank.remote(req).result(timeout_s=60)

    with ThreadPoolExecutor(8) as pool:
        for _ in range(8):
            pool.submit(load)
        try:
            _wait(lambda: _running("rank_scale", "Ranking") == 2, 120, "a second replica")
        finally:
            stop.set()
    _wait(lambda: _running("rank_scale", "Ranking") == 1, 120, "scaling back to one replica")
    serve.delete("rank_scale")
