"""What every deployment shares: the resources its replica was given, fault injection."""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass

import ray

from mlsd.runtime import (
    assigned_resources,
    resolve_device,
    resolve_threads,
    set_process_threads,
)


@dataclass(frozen=True)
class ReplicaResources:
    gpu_ids: list[str] | None  # None: not inside Ray
    threads: int
    device: str  # where "auto" places this replica's model


def replica_resources(device: str = "auto") -> ReplicaResources:
    """The accelerators Ray assigned this replica and one thread per whole CPU it reserved
    (at least one); every thread pool of the process is sized to that."""

    gpu_ids, cpus = assigned_resources(ray.get_runtime_context() if ray.is_initialized() else None)
    threads = set_process_threads(resolve_threads(cpus))
    return ReplicaResources(gpu_ids, threads, resolve_device(device, gpu_ids))


async def inject_fault(fail_with: str | None, what: str) -> None:
    """Tests only: ``"error"`` raises, ``"hang"`` never returns (in practice), None does nothing."""
    if fail_with == "error":
        raise RuntimeError(f"injected {what} failure")
    if fail_with == "hang":
        await asyncio.sleep(3600)


class FaultInjectable:
    """A deployment whose injected fault (tests only) is Serve ``user_config``:
    ``{"fail_with": "error" | "hang" | None}``, applied by ``reconfigure``."""

    _fail_with: str | None = None

    def reconfigure(self, config: dict) -> None:
        self._fail_with = config.get("fail_with")


class Batched(FaultInjectable):
    """A deployment whose ``@serve.batch`` method and fault injection are tuned at run time by
    Serve's ``user_config`` (``reconfigure``), so a change applies without restarting replicas.

    user_config: ``{"max_batch_size": 16, "batch_wait_timeout_s": 0.005, "fail_with": None}``.
    """

    batch_method = "encode_batch"
    _batching: dict | None = None

    def reconfigure(self, config: dict) -> None:
        method = getattr(self, self.batch_method)
        size = int(config.get("max_batch_size", 16))
        wait = float(config.get("batch_wait_timeout_s", 0.005))
        if size < 1 or wait < 0:
            raise ValueError(f"invalid batching config {config!r}")
        method.set_max_batch_size(size)
        method.set_batch_wait_timeout_s(wait)
        self._batching = {"max_batch_size": size, "batch_wait_timeout_s": wait}
        super().reconfigure(config)

    def replica_config(self) -> dict:
        """What this replica runs with now (for tests and operators)."""

        return {
            "pid": os.getpid(),
            **(self._batching or {}),
            "fail_with": self._fail_with,
            "device": getattr(self, "device", None),
        }
