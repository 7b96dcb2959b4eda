"""Shared helpers of the jobs: Ray start-up that behaves on a laptop and on a cluster."""

from __future__ import annotations

import os

import ray


def init_ray(num_cpus: int | None = None) -> None:
    """Join the cluster a job was submitted to; else start a small local one."""
    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if os.environ.get("RAY_ADDRESS"):
        ray.init(log_to_driver=True)
    else:
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=True)
