"""Retriever deployment: ANN search over the catalogue, and the live indexing path."""

from __future__ import annotations

import asyncio

import numpy as np
from ray import serve

from mlsd.artifacts import ArtifactStore
from mlsd.rerank import ImageMeta
from mlsd.visual_search import CatalogueIndex


@serve.deployment(ray_actor_options={"num_cpus": 0.25}, max_ongoing_requests=64)
class Retriever:
    def __init__(
        self, store_uri: str, artifact: str, version: str = "latest", live_log: str | None = None
    ):
        art = ArtifactStore(store_uri).load(artifact, version)
        self.catalogue = CatalogueIndex(art, live_log=live_log)

    async def search(self, embedding: np.ndarray, k: int) -> list[tuple[int, float, ImageMeta]]:
        """(D,) -> up to k (image_id, score, metadata), best first."""
        hits = (await asyncio.to_thread(self.catalogue.search, embedding[None], k))[0]
        return [(h.image_id, h.score, self.catalogue.meta[h.image_id]) for h in hits]

    async def add(self, embedding: np.ndarray, model_version: str, **meta) -> int:
        """Durably log and index one image; returns its id once committed."""
        return await asyncio.to_thread(self.catalogue.add, embedding, model_version, **meta)

    def info(self) -> dict:
        idx = self.catalogue.index
        return {"version": self.catalogue.version, "size": len(idx), "kind": idx.kind}
