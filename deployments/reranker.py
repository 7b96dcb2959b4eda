"""Reranker deployment: the book's reranking service (privacy, safety, near-duplicates)."""

from __future__ import annotations

from ray import serve

from mlsd.rerank import ImageMeta, RerankConfig, rerank


@serve.deployment(ray_actor_options={"num_cpus": 0.1})
class Reranker:
    def __init__(self, config: dict | None = None):
        self.cfg = RerankConfig(**(config or {}))

    def rerank(
        self, candidates: list[tuple[int, float, ImageMeta]], k: int, user_id: str | None
    ) -> list[tuple[int, float]]:
        meta = {i: m for i, _, m in candidates}
        return rerank([(i, s) for i, s, _ in candidates], meta, k, user_id, self.cfg)
