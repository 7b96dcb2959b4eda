"""Shared helpers of the jobs: Ray start-up that behaves on a laptop and on a cluster."""

from __future__ import annotations

import os

import ray


def init_ray(num_cpus: int | None = None) -> None:
    """Join the cluster a job was submitted to; else start a small local one."""
    if ray.is_initialized():
        return
    from mlsd.runtime import resolve_threads, set_process_threads

    set_process_threads(resolve_threads())  # the driver's pools: the CPUs it may use
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if os.environ.get("RAY_ADDRESS"):
        ray.init(log_to_driver=True)
    else:
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=True)


def task_resources() -> tuple[list[str] | None, int]:
    """(GPU ids, threads) of the Ray task or actor this runs in: the accelerators Ray assigned
    and one thread per whole CPU it reserved; outside Ray, (None, the process's CPUs)."""
    from mlsd.runtime import assigned_resources, resolve_threads, set_process_threads

    if not ray.is_initialized():
        return None, resolve_threads()
    gpu_ids, cpus = assigned_resources(ray.get_runtime_context())
    return gpu_ids, set_process_threads(resolve_threads(cpus))
