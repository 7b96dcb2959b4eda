"""Drift monitoring in the serving path, generic for every app.

The ingress sends what it served (input features, embeddings, scores) to the app's one
:class:`DriftMonitor` replica without awaiting it (:class:`DriftTap`), so monitoring never
delays or fails an answer; the monitor keeps the rolling windows (``mlsd.drift``), logs a
warning when a judged window moved and serves ``GET /<app>/drift``. Observations travel in
batches (up to 64, or what one second gathered): one call per request cost the ingress and the
monitor ~4 ms of CPU per answer between them (``bench.serve_visual_search``).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

from ray import serve

from deployments import metrics
from mlsd.artifacts import ArtifactStore
from mlsd.drift import DriftMonitor as Monitor
from mlsd.drift import DriftThresholds, load_reference

log = logging.getLogger("ray.serve")


@serve.deployment(num_replicas=1, ray_actor_options={"num_cpus": 0.05}, max_queued_requests=4096)
class DriftMonitor:
    def __init__(self, store_uri: str | dict, artifact: str, version: str, thresholds: dict):
        """The reference is the served model's artifact's (none in it: the report says so)."""
        art = ArtifactStore.open(store_uri).load(artifact, version)
        self.label = f"{artifact}/{version}"
        self.monitor = Monitor(
            load_reference(art), DriftThresholds(**thresholds), on_drift=self._alarm
        )

    def _alarm(self, judged: dict) -> None:
        moved = {n: judged["streams"][n] for n in judged["moved"]}
        detail = ", ".join(
            f"{n} (p={r['p_value']:.2g}" + (f", psi={r['psi']:.2f})" if "psi" in r else ")")
            for n, r in moved.items()
        )
        log.warning(
            "drift: %s, observations %d-%d moved: %s", self.label, *judged["window"], detail
        )

    async def observe(self, batch: list[dict[str, Any]]) -> None:
        """Observations in the order they were served (one :class:`DriftTap`'s batch)."""
        judged = await asyncio.to_thread(self._observe, batch)  # windows' tests
        for j in judged:
            metrics.drift_window(j)

    def _observe(self, batch: list[dict[str, Any]]) -> list[dict]:
        out = [self.monitor.observe(**values) for values in batch]
        return [j for j in out if j is not None]

    async def report(self) -> dict:
        return {"model": self.label, **await asyncio.to_thread(self.monitor.report)}


class DriftTap:
    """Fire-and-forget observations from an ingress to its app's :class:`DriftMonitor`, in
    batches: sent when ``batch`` have gathered or ``max_delay_s`` after the first of them (a
    timer armed only while some wait, so an idle ingress never wakes for it)."""

    def __init__(
        self,
        monitor,
        off: str = "drift monitoring is off in this app's config",
        batch: int = 64,
        max_delay_s: float = 1.0,
    ):
        """``monitor``: the DriftMonitor's DeploymentHandle, or None (``off`` says why)."""
        self.monitor, self.off = monitor, off
        self.batch, self.max_delay_s = batch, max_delay_s
        self._pending: list[dict[str, Any]] = []
        self._lock = threading.Lock()  # observe may be called from worker threads too
        self._timer: asyncio.TimerHandle | None = None

    def observe(self, **values: Any) -> None:
        if self.monitor is None:
            return
        with self._lock:
            self._pending.append(values)
            full = len(self._pending) >= self.batch
            if not full and self._timer is None:
                try:
                    loop = asyncio.get_running_loop()
                except RuntimeError:  # not on an event loop: no timer to arm, send now
                    full = True
                else:
                    self._timer = loop.call_later(self.max_delay_s, self.flush)
        if full:
            self.flush()

    def _take(self) -> list[dict[str, Any]]:
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            batch, self._pending = self._pending, []
        return batch

    def flush(self):
        """Send what waits (fire-and-forget); -> the call's response, or None."""
        batch = self._take()
        if not batch:
            return None
        try:
            return self.monitor.observe.remote(batch)
        except Exception:  # never let monitoring break the ingress
            log.exception("could not record %d drift observations", len(batch))
            return None

    async def report(self) -> dict:
        if self.monitor is None:
            return {"enabled": False, "reason": self.off}
        sent = self.flush()
        if sent is not None:  # the report counts what this replica has served
            await sent
        return await self.monitor.report.remote()
