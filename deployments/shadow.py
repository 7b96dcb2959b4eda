"""Shadow deployment, the mirroring half, generic for every app.

:class:`ShadowMirror` lives inside an app's ingress replica: after the primary answer is ready
it copies a configurable share of requests to the shadow pipeline as a background task, under
a timeout, and never awaits it on the request path, so the shadow cannot change, delay or fail
the primary answer. Outcomes go to the :class:`ShadowComparator` deployment (one replica per
app), which aggregates them with ``mlsd.shadow.ShadowStats`` and serves the report.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from ray import serve

from deployments import metrics
from mlsd.shadow import ShadowStats

log = logging.getLogger("ray.serve")


class ShadowTraffic(BaseModel):
    """How much traffic the shadow gets and how patient the mirror is: tunable at run time
    (the ingress's ``user_config``), so a share can be raised or cut without a restart."""

    model_config = ConfigDict(extra="forbid")

    share: float = Field(0.1, ge=0.0, le=1.0, description="share of requests mirrored")
    timeout_s: float = Field(2.0, gt=0, description="a shadow call slower than this is dropped")
    max_in_flight: int = Field(32, ge=1, description="mirrors beyond this are skipped")

    def traffic(self) -> dict:
        """Only the traffic fields (an ingress's ``user_config``), whatever the subclass adds."""
        return self.model_dump(include=set(ShadowTraffic.model_fields))


@serve.deployment(num_replicas=1, ray_actor_options={"num_cpus": 0.05}, max_queued_requests=1024)
class ShadowComparator:
    def __init__(self, comparison: str = "overlap@k", k: int = 10):
        self.stats = ShadowStats(comparison=comparison, k=k)
        self.skipped = 0

    def record(self, **outcome: Any) -> None:
        self.stats.record(**outcome)
        kind = (
            "timeout"
            if outcome.get("timed_out")
            else ("error" if outcome.get("error") is not None else "completed")
        )
        metrics.shadow_outcome(kind, self.stats.mean_score())

    def skip(self) -> None:
        self.skipped += 1
        metrics.shadow_outcome("skipped")

    def report(self) -> dict:
        return {**self.stats.report(), "skipped_busy": self.skipped}


class ShadowMirror:
    """Fire-and-forget mirroring of requests to a shadow pipeline (used inside an ingress)."""

    def __init__(
        self,
        run_shadow: Callable[[Any], Awaitable[Any]],
        comparator,  # DeploymentHandle of ShadowComparator
        traffic: ShadowTraffic,
        seed: int | None = None,
    ):
        self.run_shadow, self.comparator, self.args = run_shadow, comparator, traffic
        self._rng = random.Random(seed)
        self._tasks: set[asyncio.Task] = set()

    @classmethod
    def maybe(
        cls, run_shadow: Callable[[Any], Awaitable[Any]], comparator, traffic: BaseModel | None
    ) -> ShadowMirror | None:
        """A mirror when the app has a shadow (its args and a comparator), else None."""
        if traffic is None or comparator is None:
            return None
        fields = traffic.model_dump(include=set(ShadowTraffic.model_fields))
        return cls(run_shadow, comparator, ShadowTraffic(**fields))

    def tune(self, config: dict) -> None:
        """Apply a new share / timeout / in-flight cap (the ingress's ``reconfigure``)."""
        self.args = ShadowTraffic(**{**self.args.model_dump(), **config})

    def maybe_mirror(self, request: Any, primary: Any, primary_ms: float) -> bool:
        """Schedule a shadow call for this request with probability ``share``; never blocks."""
        if self._rng.random() >= self.args.share:
            return False
        if len(self._tasks) >= self.args.max_in_flight:
            self.comparator.skip.remote()
            return False
        task = asyncio.get_running_loop().create_task(self._mirror(request, primary, primary_ms))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    async def _mirror(self, request: Any, primary: Any, primary_ms: float) -> None:
        t0 = time.perf_counter()
        outcome: dict[str, Any] = {"primary": primary, "primary_ms": primary_ms}
        try:
            shadow = await asyncio.wait_for(self.run_shadow(request), self.args.timeout_s)
            outcome.update(shadow=shadow, shadow_ms=(time.perf_counter() - t0) * 1e3)
        except TimeoutError:
            outcome["timed_out"] = True
        except Exception as e:  # the shadow's failure is data, not an incident
            cause = getattr(e, "cause", None) or e  # a Ray task error wraps the real one
            log.warning("shadow request failed: %s: %s", type(cause).__name__, cause)
            outcome["error"] = type(cause).__name__  # the report names the kind, the log the rest
        try:
            self.comparator.record.remote(**outcome)
        except Exception:  # never let reporting break the ingress
            log.exception("could not record a shadow outcome")
