"""apps.demo without Ray: which systems serve at once, in what order the rest train, what a
placeholder answers, and that a finished system replaces its placeholder."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import pytest

from apps.demo import (
    Demo,
    Job,
    TrainingArgs,
    build_training_app,
    deploy_config,
    progress,
    training_order,
)

CONFIG = {
    "http_options": {"host": "127.0.0.1", "port": 8000},
    "applications": [
        {"name": "slow", "route_prefix": "/slow", "import_path": "apps.x:build_app", "args": {}},
        {"name": "quick", "route_prefix": "/quick", "import_path": "apps.y:build_app"},
        {"name": "there", "route_prefix": "/there", "import_path": "apps.z:build_app"},
    ],
}
JOBS = {
    "slow": (Job("slow_a", "m", (), 600.0),),
    "quick": (Job("quick_a", "m", (), 60.0), Job("quick_b", "m", (), 30.0)),
    "there": (Job("there_a", "m", (), 10.0),),
}


def _made(store: Path, artifact: str) -> None:
    (store / artifact).mkdir(parents=True, exist_ok=True)
    (store / artifact / "LATEST").write_text("v1")


def test_systems_with_their_artifacts_serve_and_the_rest_wait_behind_placeholders(tmp_path):
    _made(tmp_path, "there_a")
    cfg = deploy_config(CONFIG, {"there"}, "var/demo/status.json")
    by_name = {a["name"]: a for a in cfg["applications"]}
    assert by_name["there"] == CONFIG["applications"][2]  # as configured
    for name in ("slow", "quick"):
        assert by_name[name]["import_path"] == "apps.demo:build_training_app"
        assert by_name[name]["route_prefix"] == f"/{name}"
        assert by_name[name]["args"]["system"] == name
    assert cfg["http_options"] == CONFIG["http_options"]


def test_the_quickest_missing_system_trains_first(tmp_path):
    assert training_order(JOBS, tmp_path) == ["there", "quick", "slow"]
    _made(tmp_path, "quick_a")  # only 30 s of quick left
    _made(tmp_path, "there_a")
    assert training_order(JOBS, tmp_path) == ["quick", "slow"]


def test_progress_counts_finished_jobs_and_caps_a_long_one():
    entry = {"state": "training", "jobs_done": 1, "expected_s": [60.0, 30.0], "started": 100.0}
    p = progress(entry, now=110.0)
    assert p["jobs_done"] == 1 and p["jobs"] == 2 and p["elapsed_s"] == 10.0
    assert p["progress"] == pytest.approx((60 + 10) / 90, abs=1e-3)
    late = progress(entry, now=10_000.0)  # the second job ran far past its 30 s
    assert late["progress"] < 1.0 and late["status"] == "training"


def test_each_finished_system_replaces_its_placeholder_and_a_failure_is_reported(tmp_path):
    store, status = tmp_path / "store", tmp_path / "status.json"
    deployed, ran = [], []

    def run_job(job: Job) -> bool:
        ran.append(job.artifact)
        if job.artifact == "slow_a":
            return False  # the job fails: its system stays a placeholder, saying so
        _made(store, job.artifact)
        return True

    demo = Demo(
        CONFIG,
        str(store),
        JOBS,
        status_file=str(status),
        log_dir=str(tmp_path / "logs"),
        deploy=lambda cfg: deployed.append(
            {
                a["name"]
                for a in cfg["applications"]
                if a["import_path"] != "apps.demo:build_training_app"
            }
        ),
        say=lambda line: None,
    )
    demo.run_job = run_job
    demo.run()
    assert ran == ["there_a", "quick_a", "quick_b", "slow_a"]
    assert deployed == [set(), {"there"}, {"there", "quick"}]  # at start, then one per system
    final = json.loads(status.read_text())
    assert final["quick"]["state"] == "ready" and final["there"]["state"] == "ready"
    assert final["slow"]["state"] == "failed" and final["slow"]["log"].endswith("slow_a.log")
    assert not demo.all_ready()


def test_serve_builds_the_placeholder_from_config_args():
    """Serve passes a config's ``args`` as the builder's pydantic model only when the
    annotation is a class at run time (not a string under postponed annotations)."""
    annotation = inspect.signature(build_training_app).parameters["args"].annotation
    assert inspect.isclass(annotation) and issubclass(annotation, TrainingArgs)
