"""Drift monitoring in the serving path, generic for every app.

The ingress sends what it served (input features, embeddings, scores) to the app's one
:class:`DriftMonitor` replica without awaiting it (:class:`DriftTap`), so monitoring never
delays or fails an answer; the monitor keeps the rolling windows (``mlsd.drift``), logs a
warning when a judged window moved and serves ``GET /<app>/drift``.
"""

from __future__ import annotations

import asyncio
import logging
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

    async def observe(self, values: dict[str, Any]) -> None:
        judged = await asyncio.to_thread(self.monitor.observe, **values)  # a window's tests
        if judged is not None:
            metrics.drift_window(judged)

    async def report(self) -> dict:
        return {"model": self.label, **await asyncio.to_thread(self.monitor.report)}


class DriftTap:
    """Fire-and-forget observations from an ingress to its app's :class:`DriftMonitor`."""

    def __init__(self, monitor, off: str = "drift monitoring is off in this app's config"):
        """``monitor``: the DriftMonitor's DeploymentHandle, or None (``off`` says why)."""
        self.monitor, self.off = monitor, off

    def observe(self, **values: Any) -> None:
        if self.monitor is None:
            return
        try:
            self.monitor.observe.remote(values)
        except Exception:  # never let monitoring break the ingress
            log.exception("could not record a drift observation")

    async def report(self) -> dict:
        if self.monitor is None:
            return {"enabled": False, "reason": self.off}
        return await self.monitor.report.remote()
