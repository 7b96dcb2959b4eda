"""ImageEncoder deployment: batched embedding of preprocessed images (`@serve.batch`)."""

from __future__ import annotations

import asyncio

import numpy as np
from ray import serve

from deployments.faults import inject_fault
from mlsd.artifacts import ArtifactStore
from mlsd.visual_search import ImageEncoderModel


@serve.deployment(ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=64)
class ImageEncoder:
    def __init__(
        self,
        store_uri: str,
        artifact: str,
        version: str = "latest",
        backend: str = "torch",
        num_threads: int | None = None,
        max_batch_size: int = 16,
        batch_wait_timeout_s: float = 0.005,
        fail_with: str | None = None,
    ):
        art = ArtifactStore(store_uri).load(artifact, version)
        self.model = ImageEncoderModel(art, backend=backend, num_threads=num_threads)
        self.encode_batch.set_max_batch_size(max_batch_size)
        self.encode_batch.set_batch_wait_timeout_s(batch_wait_timeout_s)
        self._fail_with = fail_with  # fault injection for tests: "error" or "hang"

    def version(self) -> str:
        return self.model.version

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.005)
    async def encode_batch(self, images: list[np.ndarray]) -> list[np.ndarray]:
        batch = np.stack(images)  # (B, C, S, S)
        out = await asyncio.to_thread(self.model.encode, batch)  # (B, D)
        return list(out)

    async def encode(self, image: np.ndarray) -> np.ndarray:
        """(C, S, S) -> (D,); concurrent calls are grouped into one model batch."""
        await inject_fault(self._fail_with, "encoder")
        return await self.encode_batch(image)
