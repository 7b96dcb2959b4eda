"""Shared plumbing of the jobs: Ray start-up that behaves on a laptop and on a cluster, the
cluster flags every training job takes, and the Ray Train loop's three touch points:
``resume`` (the last checkpoint back), ``report`` (metrics + rank 0's checkpoint each epoch)
and ``fit`` (the trainer, run, and its last checkpoint's state)."""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import ray
import ray.data
import ray.train
import torch
from ray.train.torch import TorchTrainer

from mlsd.runtime import assigned_resources, resolve_threads, set_process_threads

# Ray Data's progress when stdout is a log file, not a terminal (make serve, CI, ray job logs):
# one line per operator at this period (seconds) instead of a redrawn bar a second
PROGRESS_LOG_INTERVAL_S = 60
# imported by every worker of the local cluster, so in a module that imports nothing heavy
WORKER_SETUP_HOOK = "train.worker_setup.quiet_without_dashboard"
STATE_FILE = "state.pt"  # what a checkpoint holds: tensors and numbers only (weights_only)


def init_ray(num_cpus: int | None = None) -> None:
    """Join the cluster a job was submitted to; else start a small local one."""
    if ray.is_initialized():
        return

    set_process_threads(resolve_threads())  # the driver's pools: the CPUs it may use
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    calm_progress()
    if os.environ.get("RAY_ADDRESS"):
        ray.init(log_to_driver=True)
    else:
        ray.init(
            address="local",
            num_cpus=num_cpus,
            include_dashboard=False,
            log_to_driver=True,
            runtime_env={"worker_process_setup_hook": WORKER_SETUP_HOOK},
        )


def calm_progress() -> None:
    """Readable job logs: when stdout is not a terminal, Ray Data's progress bars (tqdm
    redrawn in the workers many times a second, each redraw a log line at the driver) become a
    line per operator every ``PROGRESS_LOG_INTERVAL_S``, logged where the dataset runs."""
    if sys.stdout.isatty():
        return

    # read by the workers' progress loggers (a local cluster's workers inherit the driver's env)
    os.environ.setdefault("RAY_DATA_NON_TTY_PROGRESS_LOG_INTERVAL", str(PROGRESS_LOG_INTERVAL_S))
    ray.data.DataContext.get_current().use_ray_tqdm = False


def task_resources() -> tuple[list[str] | None, int]:
    """(GPU ids, threads) of the Ray task or actor this runs in: the accelerators Ray assigned
    and one thread per whole CPU it reserved; outside Ray, (None, the process's CPUs)."""

    if not ray.is_initialized():
        return None, resolve_threads()
    gpu_ids, cpus = assigned_resources(ray.get_runtime_context())
    return gpu_ids, set_process_threads(resolve_threads(cpus))


def resume(model, opt) -> dict | None:
    """Inside a Ray Train worker: the latest checkpoint's ``state.pt`` (tensors only, loaded
    with weights_only) restored into ``model`` and ``opt``; returns the whole state for the
    job's own keys (epoch, ...), or None on a fresh run."""

    ckpt = ray.train.get_checkpoint()
    if not ckpt:
        return None
    with ckpt.as_directory() as d:
        state = torch.load(Path(d) / STATE_FILE, weights_only=True)
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    return state


def add_train_args(p, run_prefix: str) -> None:
    """The flags every Ray Train job takes: where it runs (workers, GPU, CPUs each, a local
    cluster's size), under what name its checkpoints go (the same ``--run-name`` resumes), and
    how many lost workers it survives (each restart resumes from the last checkpoint)."""
    p.add_argument("--num-workers", type=int, default=1, help="Ray Train workers (DDP when > 1)")
    p.add_argument("--use-gpu", action="store_true")
    p.add_argument("--cpus-per-worker", type=float, default=1.0)
    p.add_argument("--num-cpus", type=int, default=None, help="local Ray only")
    p.add_argument(
        "--run-name",
        default=None,
        help=f"re-use to resume from its last checkpoint (default {run_prefix}-<time>)",
    )
    p.add_argument("--runs-dir", default=os.path.abspath("var/ray_results"))
    p.set_defaults(run_prefix=run_prefix)
    p.add_argument(
        "--max-failures",
        type=int,
        default=3,
        help="worker failures a run survives, each resumed from the last checkpoint",
    )


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model itself, inside DDP's wrapper or not (what a checkpoint saves)."""
    return model.module if hasattr(model, "module") else model


def report(metrics: dict, state: dict | None = None) -> None:
    """Every worker reports ``metrics``; rank 0 also saves ``state`` (``STATE_FILE``) as the
    run's checkpoint, which ``resume`` reads after a restart and ``fit`` returns at the end.
    ``state=None``: metrics only (a job checkpointing every few epochs)."""
    with tempfile.TemporaryDirectory() as d:
        checkpoint = None
        if state is not None and ray.train.get_context().get_world_rank() == 0:
            torch.save(state, Path(d) / STATE_FILE)
            checkpoint = ray.train.Checkpoint.from_directory(d)
        ray.train.report(metrics, checkpoint=checkpoint)


@dataclass
class Fitted:
    """A finished run: its name, last reported metrics, last checkpoint's state, seconds."""

    run_name: str
    metrics: dict
    state: dict
    seconds: float


def fit(
    loop: Callable[[dict], None],
    config: dict,
    a,
    datasets: dict | None = None,
    num_to_keep: int = 2,
) -> Fitted:
    """Run ``loop`` on ``a.num_workers`` Ray Train workers (``add_train_args``' flags) under
    ``a.run_name`` (or a fresh timestamped name: a re-used name resumes), and read back the
    last checkpoint's state."""
    run_name = a.run_name or f"{a.run_prefix}-{time.strftime('%Y%m%d-%H%M%S')}"
    trainer = TorchTrainer(
        loop,
        train_loop_config=config,
        scaling_config=ray.train.ScalingConfig(
            num_workers=a.num_workers,
            use_gpu=a.use_gpu,
            resources_per_worker={"CPU": a.cpus_per_worker},
        ),
        run_config=run_config(run_name, a.runs_dir, a.max_failures, num_to_keep),
        datasets=datasets or {},
    )
    t0 = time.perf_counter()
    result = trainer.fit()
    seconds = time.perf_counter() - t0
    with result.checkpoint.as_directory() as d:
        state = torch.load(Path(d) / STATE_FILE, weights_only=True)
    return Fitted(run_name, dict(result.metrics), state, seconds)


def run_config(name: str, storage_path: str, max_failures: int = 3, num_to_keep: int = 2):
    """Every Ray Train job's RunConfig: named runs under ``storage_path`` (the same name
    resumes), the last ``num_to_keep`` checkpoints, and ``FailureConfig(max_failures)``: a
    lost worker restarts the worker group, which resumes from the latest checkpoint."""

    return ray.train.RunConfig(
        name=name,
        storage_path=storage_path,
        checkpoint_config=ray.train.CheckpointConfig(num_to_keep=num_to_keep),
        failure_config=ray.train.FailureConfig(max_failures=max_failures),
    )
