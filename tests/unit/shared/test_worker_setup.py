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
