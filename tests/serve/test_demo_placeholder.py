"""A system still training answers at its own route: 503 with what trains and how far it is."""

from __future__ import annotations

import json
import time

import pytest
import requests
from ray import serve

from apps.demo import TrainingArgs, build_training_app

pytestmark = [pytest.mark.serve, pytest.mark.slow]


def test_a_system_still_training_says_so_with_progress(serve_instance, tmp_path):
    status = tmp_path / "status.json"
    entry = {
        "state": "training",
        "job": "train.visual_search",
        "jobs_done": 0,
        "expected_s": [900.0],
        "started": time.time() - 90,
        "log": "var/demo/visual_search.log",
    }
    status.write_text(json.dumps({"visual_search": entry}))
    args = TrainingArgs(system="visual_search", status_file=str(status))
    serve.run(build_training_app(args), name="vs_training", route_prefix="/vs-training")
    try:
        for path in ("/healthz", "/search", ""):
            r = requests.get(f"{serve_instance}/vs-training{path}", timeout=30)
            assert r.status_code == 503 and r.headers["Retry-After"] == "30"
            body = r.json()
            assert body["system"] == "visual_search" and body["status"] == "training"
            assert body["job"] == "train.visual_search" and 0.05 < body["progress"] < 0.2
        entry.update(state="failed")
        status.write_text(json.dumps({"visual_search": entry}))
        assert (
            requests.get(f"{serve_instance}/vs-training/healthz", timeout=30).json()["status"]
            == "failed"
        )
    finally:
        serve.delete("vs_training")
