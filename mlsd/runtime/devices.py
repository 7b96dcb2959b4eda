"""Where a model runs and with how many threads: the CPUs and GPUs the process was given
(Ray's assignment, else its affinity), never the machine's count. ``place`` is the one
placement path (a test replaces it to observe every placement)."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import faiss
import torch
from threadpoolctl import threadpool_limits

from mlsd.runtime.base import RunnerError


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask), not the machine's core count."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def resolve_threads(cpus: float | None = None) -> int:
    """Thread-pool size for ``cpus`` CPUs (a Ray assignment may be fractional: at least one),
    never more than the process may use. ``None``: the process's affinity."""
    n = available_cpus()
    if cpus is None or cpus <= 0:
        return n
    return max(1, min(n, int(math.floor(cpus + 1e-9))))


def assigned_resources(ctx) -> tuple[list[str] | None, float | None]:
    """(GPU ids, CPUs) that a scheduler's runtime context says this process was given (Ray's
    ``ray.get_runtime_context()``); (None, None) outside a scheduler."""
    if ctx is None:
        return None, None
    gpu_ids = [str(g) for g in ctx.get_accelerator_ids().get("GPU", [])]
    return gpu_ids, ctx.get_assigned_resources().get("CPU")


def set_process_threads(n: int) -> int:
    """Size every thread pool this process uses (torch, faiss, BLAS/OpenMP) to ``n``."""
    n = max(1, int(n))
    torch.set_num_threads(n)
    faiss.omp_set_num_threads(n)
    threadpool_limits(n)
    return n


def cuda_available() -> bool:
    return torch.cuda.is_available()


def resolve_device(device: str = "auto", gpu_ids: Sequence | None = None) -> str:
    """``auto``: ``cuda`` when this process was given a GPU, else ``cpu``.

    ``gpu_ids``: the accelerator ids the scheduler assigned (Ray's ``get_accelerator_ids()``);
    an empty list means none was assigned, so a visible GPU belongs to someone else; ``None``
    means no scheduler: use a GPU if one is visible. An explicit ``cuda`` without one is an
    error, not a silent fall-back.
    """
    if device == "auto":
        if gpu_ids is not None and len(gpu_ids) == 0:
            return "cpu"
        return "cuda" if cuda_available() else "cpu"
    if device.startswith("cuda") and not cuda_available():
        raise RunnerError(f"device {device!r} asked for, but no CUDA device is visible")
    return device


def place(obj, device: str | torch.device):
    """Move a model or a tensor to its device: the one place it happens, so a test can observe
    every placement (and simulate a GPU on a machine without one)."""
    return obj.to(device)
