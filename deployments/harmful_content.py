"""Harmful-content deployments: the batched multi-task classifier (its text encoder, n-gram
bag and fused classifier, GPU when the replica has one) and the shared image backbone that
turns a post's images into the vectors the classifier's image input takes."""

from __future__ import annotations

import asyncio

import numpy as np
from ray import serve

from deployments.common import Batched, inject_fault, replica_resources
from mlsd.artifacts import ArtifactStore
from mlsd.backbones import EfficientNetLite0Encoder
from mlsd.harmful_content.features import image_input
from mlsd.harmful_content.pipeline import HarmScorer
from mlsd.runtime import make_runner


@serve.deployment(
    ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=64, max_queued_requests=128
)
class HarmClassifier(Batched):
    """Posts -> per-head probabilities; concurrent posts share one encoder + classifier batch."""

    batch_method = "score_batch"

    def __init__(
        self,
        store_uri: str | dict,
        artifact: str,
        version: str,
        backend: str = "onnx",
        device: str = "auto",
        server: dict | None = None,
    ):
        """``server``: the Triton server a ``triton`` backend's classifier runs on (the text
        encoder and n-gram bag stay in the replica)."""
        res = replica_resources(device)
        art = ArtifactStore.open(store_uri).load(artifact, version)
        self.scorer = HarmScorer(
            art, backend, res.device, res.threads, res.gpu_ids, server=server
        )  # warmed
        self.device = self.scorer.device
        self.version = art.version

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.005)
    async def score_batch(self, posts: list[dict]) -> list[list[float]]:
        probs = await self.scorer.ascore(posts)  # (B, H)
        return [row.tolist() for row in probs]

    async def score(self, post: dict) -> list[float]:
        await inject_fault(self._fail_with, "classifier")
        return await self.score_batch(post)


@serve.deployment(
    ray_actor_options={"num_cpus": 0.25}, max_ongoing_requests=32, max_queued_requests=64
)
class ImageFeatures(Batched):
    """Image bytes -> the shared ImageNet backbone's pooled 1280-d vector (EfficientNet-Lite0,
    the visual-search baseline's network). Decoding validates: anything that is not a usable
    image raises :class:`mlsd.image.InvalidImage` (a 4xx for the caller)."""

    batch_method = "encode_batch"

    def __init__(self, max_bytes: int, max_pixels: int, device: str = "auto"):

        res = replica_resources(device)
        self.max_bytes, self.max_pixels = max_bytes, max_pixels
        self.runner = make_runner(
            "torch",
            model=EfficientNetLite0Encoder().eval(),
            device=res.device,
            num_threads=res.threads,
            gpu_ids=res.gpu_ids,
        )
        self.device = self.runner.device
        self.runner.run(np.zeros((1, 3, 224, 224), np.float32))  # warm up

    def _prepare(self, data: bytes) -> np.ndarray:
        return image_input(data, self.max_bytes, self.max_pixels)  # (3, 224, 224)

    async def prepare(self, data: bytes) -> np.ndarray:
        return await asyncio.to_thread(self._prepare, data)

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.005)
    async def encode_batch(self, images: list[np.ndarray]) -> list[np.ndarray]:
        out = await asyncio.to_thread(self.runner.run, np.stack(images))  # (B, 1280)
        return list(out)

    async def encode(self, data: bytes) -> np.ndarray:
        """Bytes -> (1280,) float32; InvalidImage for anything unusable."""
        await inject_fault(self._fail_with, "image encoder")
        return await self.encode_batch(await self.prepare(data))
