"""Recommendation deployments: candidate generation (WALS + faiss, cold start, the user's
logged events) and ranking (the content-aware model behind the shared runner, batched across
concurrent requests with ``@serve.batch``)."""

from __future__ import annotations

import asyncio

import numpy as np
from ray import serve

from deployments.common import Batched, inject_fault, replica_resources
from mlsd.artifacts import ArtifactStore
from mlsd.recommendation.artifact import load_platform_ids, load_ranker, load_recommender
from mlsd.recommendation.events import EventLog
from mlsd.recommendation.features import RankRequest
from mlsd.recommendation.pipeline import UserCandidates, generate_candidates


@serve.deployment(
    ray_actor_options={"num_cpus": 0.25}, max_ongoing_requests=64, max_queued_requests=128
)
class CandidateGeneration:
    def __init__(
        self, store_uri: str | dict, artifact: str, version: str, events_log: str | None = None
    ):
        replica_resources()  # faiss's threads follow this replica's CPUs
        art = ArtifactStore.open(store_uri).load(artifact, version)
        self.rec = load_recommender(art)
        self.ids = load_platform_ids(art)  # the log keeps platform ids' hashes when mapped
        self.forgotten_upto = int(art.config.get("forgotten_upto", 0))  # trained without them
        self.log = EventLog(events_log) if events_log else None

    def _generate(self, user_id: int, n: int, log_user: int) -> UserCandidates:
        logged, forgotten = None, False
        if self.log is not None:
            items, strength = self.log.for_user(log_user)
            logged = self.ids.videos.model_ids_of_log(items), strength
            forgotten = self.log.is_forgotten(log_user, self.forgotten_upto)
        return generate_candidates(
            self.rec.cg, self.rec.history, user_id, n, logged, forgotten=forgotten
        )

    async def generate(self, user_id: int, n: int, log_user: int | None = None) -> UserCandidates:
        """Top-n candidates + the user's watch history (training log + logged events).
        ``user_id``: the model's id (-1: unknown); ``log_user``: the event log's id for them
        (:mod:`mlsd.recommendation.ids`; default ``user_id``)."""
        log_user = user_id if log_user is None else log_user
        return await asyncio.to_thread(self._generate, user_id, n, log_user)

    def check_health(self) -> None:
        """Serve's health check: a replica whose event log is unreadable takes no traffic."""
        if self.log is not None:
            self.log.check()

    def info(self) -> dict:
        cg = self.rec.cg
        return {
            "version": self.rec.version,
            "videos": int(len(cg.catalogue_items)),
            "users_with_factors": int(cg.trained_users.sum()),
            "index": cg.index.kind,
        }


@serve.deployment(
    ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=64, max_queued_requests=128
)
class Ranking(Batched):
    batch_method = "rank_batch"

    def __init__(
        self,
        store_uri: str | dict,
        artifact: str,
        version: str,
        backend: str = "torch",
        device: str = "auto",
    ):
        res = replica_resources(device)
        art = ArtifactStore.open(store_uri).load(artifact, version)
        self.ranker = load_ranker(
            art, backend, device=device, num_threads=res.threads, gpu_ids=res.gpu_ids
        )
        self.device = self.ranker.device
        self.ranker.warm_up()

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.005)
    async def rank_batch(self, requests: list[RankRequest]) -> list[np.ndarray]:
        return await asyncio.to_thread(self.ranker, requests)

    async def rank(self, request: RankRequest) -> np.ndarray:
        """(n,) probabilities that the user will find each candidate relevant."""
        await inject_fault(self._fail_with, "ranking")
        return await self.rank_batch(request)
