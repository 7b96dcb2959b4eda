"""Training survives a lost worker: a Ray Train worker process is SIGKILLed (by PID) after the
first checkpoint; ``FailureConfig(max_failures)`` restarts the worker group, which resumes
from that checkpoint, finishes every epoch, and ends near an undisturbed run's loss."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from mlsd.procs import kill, pids_of
from tests.conftest import fashion_mnist_or_none
from train.visual_search import parse_args, run

pytestmark = [pytest.mark.slow]
EPOCHS = 5


def _args(tmp_path: Path, run_name: str) -> list[str]:
    return [
        "--train-limit",
        "2048",
        "--batch-size",
        "64",
        "--max-steps-per-epoch",
        "24",
        "--epochs",
        str(EPOCHS),
        "--width",
        "8",
        "--embed-dim",
        "16",
        "--no-fuse-pretrained",
        "--store",
        str(tmp_path / "store"),
        "--runs-dir",
        str(tmp_path / "runs"),
        "--run-name",
        run_name,
        "--skip-index",
        "--max-failures",
        "2",
    ]


def test_a_killed_worker_resumes_from_its_checkpoint(ray_session, tmp_path):
    if fashion_mnist_or_none() is None:
        pytest.skip("Fashion-MNIST not installed (make data)")

    calm = run(parse_args(_args(tmp_path, "calm")))
    assert calm["final"]["resumed_from_epoch"] == 0

    before = set(pids_of("ray::RayTrainWorker"))
    killed: list[int] = []
    run_dir = tmp_path / "runs" / "killed"

    def killer() -> None:  # after the first checkpoint: kill this run's worker
        deadline = time.time() + 300
        while time.time() < deadline and not killed:
            if (run_dir / "checkpoint_manager_snapshot.json").exists():  # one registered
                for pid in set(pids_of("ray::RayTrainWorker")) - before:
                    kill(pid)
                    killed.append(pid)
            time.sleep(0.05)

    t = threading.Thread(target=killer)
    t.start()
    out = run(parse_args(_args(tmp_path, "killed")))
    t.join()
    assert killed, "no training worker was killed"
    final = out["final"]
    assert final["epoch"] == EPOCHS - 1  # every epoch trained
    assert final["resumed_from_epoch"] >= 1  # from the checkpoint, not from scratch
    assert final["epochs_this_run"] < EPOCHS
    # within noise of the undisturbed run (same data and seed; the resumed epochs draw new
    # augmentations and batch orders)
    assert abs(final["loss"] - calm["final"]["loss"]) < 0.15 * calm["final"]["loss"], (
        final["loss"],
        calm["final"]["loss"],
    )
