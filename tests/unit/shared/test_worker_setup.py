"""The jobs' worker set-up hook: Ray imports its module in every worker of a job's local
cluster (Ray Data's own actors included), so that module must import nothing heavy."""

from __future__ import annotations

import importlib
import subprocess
import sys

from train import common


def test_the_worker_hook_imports_neither_torch_nor_ray_train():
    code = (
        "import sys, train.worker_setup as w; w.quiet_without_dashboard(); "
        "print(sorted(m for m in ('torch', 'ray', 'ray.data', 'ray.train') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_jobs_name_the_hook_by_its_import_path():
    """A callable would be pickled by reference to its module (train.common before: torch,
    Ray Train and Ray Data in every worker); the string is imported where it lives."""
    module, _, name = common.WORKER_SETUP_HOOK.rpartition(".")
    assert module == "train.worker_setup"
    assert callable(getattr(importlib.import_module(module), name))


def test_a_local_cluster_is_started_with_the_hook_by_path(monkeypatch):
    """What init_ray hands Ray is the import path, not the function (which Ray would pickle by
    reference to train.common and import that, torch and all, in every worker)."""
    seen: dict = {}
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(common.ray, "is_initialized", lambda: False)
    monkeypatch.setattr(common.ray, "init", lambda **kw: seen.update(kw))
    common.init_ray(1)
    assert seen["runtime_env"] == {
        "worker_process_setup_hook": "train.worker_setup.quiet_without_dashboard"
    }
