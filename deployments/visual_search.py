"""Visual search deployments: the batched image encoder, and the retriever that holds the
catalogue (ANN index + metadata + live log) and applies the reranking rules where the
candidates' metadata already is (one hop fewer than a separate reranking service)."""

from __future__ import annotations

import asyncio

import numpy as np
from ray import serve

from deployments.common import Batched, inject_fault, replica_resources
from mlsd.artifacts import ArtifactStore
from mlsd.state import Caller, may_change
from mlsd.visual_search.catalogue import CatalogueIndex
from mlsd.visual_search.pipeline import ImageEncoderModel
from mlsd.visual_search.rerank import RerankConfig


@serve.deployment(
    ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=64, max_queued_requests=128
)
class ImageEncoder(Batched):
    """(C, S, S) model inputs -> (D,) embeddings; concurrent calls share one model batch."""

    def __init__(
        self,
        store_uri: str | dict,
        artifact: str,
        version: str,
        backend: str,
        device: str = "auto",
        server: dict | None = None,
    ):
        """``server``: the Triton server a ``triton*`` backend runs on (else in the replica)."""
        res = replica_resources(device)
        art = ArtifactStore.open(store_uri).load(artifact, version)
        self.model = ImageEncoderModel(
            art,
            backend=backend,
            num_threads=res.threads,
            device=device,
            gpu_ids=res.gpu_ids,
            server=server,
        )  # warmed up
        self.device = self.model.device

    def version(self) -> str:
        return self.model.version

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.005)
    async def encode_batch(self, images: list[np.ndarray]) -> list[np.ndarray]:
        batch = np.stack(images)  # (B, C, S, S)
        return list(await self.model.aencode(batch))  # B x (D,)

    async def encode(self, image: np.ndarray) -> np.ndarray:
        await inject_fault(self._fail_with, "encoder")
        return await self.encode_batch(image)


@serve.deployment(
    ray_actor_options={"num_cpus": 0.25}, max_ongoing_requests=64, max_queued_requests=128
)
class Retriever:
    def __init__(
        self,
        store_uri: str | dict,
        artifact: str,
        version: str,
        live_log: str | None = None,
        object_store: str | None = None,
        rerank: dict | None = None,
        overfetch: int = 4,
        max_per_owner: int | None = None,
        retention_s: float | None = None,
    ):
        replica_resources()  # faiss's threads follow this replica's CPUs
        art = ArtifactStore.open(store_uri).load(artifact, version)
        # an existing store, or this replica fails to start naming it (never starts empty)
        self.catalogue = CatalogueIndex(art, live_log, object_store, max_per_owner, retention_s)
        self.rerank_cfg, self.overfetch = RerankConfig(**(rerank or {})), overfetch

    async def search(
        self, embedding: np.ndarray, k: int, user_id: str | None
    ) -> list[tuple[int, float]]:
        """(D,) -> up to k (image_id, score) after reranking, best first."""
        hits = await asyncio.to_thread(
            self.catalogue.retrieve, embedding, k, user_id, self.rerank_cfg, self.overfetch
        )
        return [(h.image_id, h.score) for h in hits]

    async def add(self, embedding: np.ndarray, model_version: str, **meta) -> int:
        """Durably log and index one image; returns its id once committed."""
        return await asyncio.to_thread(self.catalogue.add, embedding, model_version, **meta)

    async def get(self, image_id: int, caller: Caller) -> dict | None:
        """The image and its metadata if ``caller`` may see it, else None (404)."""
        m = await asyncio.to_thread(self.catalogue.visible, image_id, caller)
        if m is None:
            return None
        data = await asyncio.to_thread(self.catalogue.image, image_id)
        return {"owner": m.owner, "private": m.private, "image": data}

    async def delete(self, image_id: int, caller: Caller) -> str:
        """-> "deleted" | "not_found" (never existed, already deleted, or not visible to the
        caller) | "forbidden" (visible, but not the caller's to change)."""
        m = await asyncio.to_thread(self.catalogue.visible, image_id, caller)
        if m is None:
            return "not_found"
        if not may_change(caller, m.owner):
            return "forbidden"
        done = await asyncio.to_thread(self.catalogue.delete, image_id, caller.user)
        return "deleted" if done else "not_found"

    def info(self) -> dict:
        return self.catalogue.info()

    def check_health(self) -> None:
        """Serve's health check: a replica whose state store or object store is missing,
        replaced or unreachable takes no traffic (the error names the store)."""
        if self.catalogue.log is not None:
            self.catalogue.log.check()
