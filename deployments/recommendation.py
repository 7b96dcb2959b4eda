"""Recommendation deployments: candidate generation (WALS + faiss, cold start) and ranking
(the content-aware model, batched across concurrent requests with ``@serve.batch``)."""

from __future__ import annotations

import asyncio

import numpy as np
from ray import serve

from deployments.faults import inject_fault
from mlsd.artifacts import ArtifactStore
from mlsd.recommendation.artifact import load_ranker, load_recommender
from mlsd.recommendation.events import EventLog
from mlsd.recommendation.features import RankRequest
from mlsd.recommendation.pipeline import rank


@serve.deployment(ray_actor_options={"num_cpus": 0.25}, max_ongoing_requests=64)
class CandidateGeneration:
    def __init__(self, store_uri: str, artifact: str, version: str, events_log: str | None = None):
        self.rec = load_recommender(ArtifactStore(store_uri).load(artifact, version))
        self.log = EventLog(events_log) if events_log else None

    def _generate(self, user_id: int, n: int) -> dict:
        items, ratings = self.rec.history.of(user_id)
        fresh, strength = (
            self.log.for_user(user_id) if self.log is not None else (np.zeros(0, np.int64),) * 2
        )
        ok = (fresh >= 0) & (fresh < self.rec.tables.n_items)  # unknown videos: kept, not used
        fresh, strength = fresh[ok], np.asarray(strength, np.float32)[ok]
        c = self.rec.cg.generate(user_id, n, items, fresh)
        return {
            "items": c.items,
            "scores": c.scores,
            "strategy": c.strategy,
            "history_items": np.concatenate([items, fresh]),
            "history_ratings": np.concatenate([ratings, strength]),
        }

    async def generate(self, user_id: int, n: int) -> dict:
        """Top-n candidates (items, scores, strategy) + the user's watch history."""
        return await asyncio.to_thread(self._generate, user_id, n)

    def info(self) -> dict:
        cg = self.rec.cg
        return {
            "version": self.rec.version,
            "videos": int(len(cg.catalogue_items)),
            "users_with_factors": int(cg.trained_users.sum()),
            "index": cg.index.kind,
        }


@serve.deployment(ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=64)
class Ranking:
    def __init__(
        self,
        store_uri: str,
        artifact: str,
        version: str,
        max_batch_size: int = 16,
        batch_wait_timeout_s: float = 0.005,
        num_threads: int | None = None,
        fail_with: str | None = None,
    ):
        import torch

        if num_threads:
            torch.set_num_threads(num_threads)
        art = ArtifactStore(store_uri).load(artifact, version)
        self.model, self.tables = load_ranker(art)
        if torch.cuda.is_available():  # a GPU replica (serve_config.gpu.yaml) ranks on it
            self.model = self.model.to("cuda")
        self.version = art.version
        self.rank_batch.set_max_batch_size(max_batch_size)
        self.rank_batch.set_batch_wait_timeout_s(batch_wait_timeout_s)
        self._fail_with = fail_with  # fault injection for tests: "error" or "hang"

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.005)
    async def rank_batch(self, requests: list[RankRequest]) -> list[np.ndarray]:
        return await asyncio.to_thread(rank, self.model, self.tables, requests)

    async def rank(self, request: RankRequest) -> np.ndarray:
        """(n,) probabilities that the user will find each candidate relevant."""
        await inject_fault(self._fail_with, "ranking")
        return await self.rank_batch(request)
