"""Street View blurring deployments: CPU preprocessing + blurring, and the batched detector
(GPU when the replica has one). They scale separately, as the book splits them."""

from __future__ import annotations

import asyncio

import numpy as np
from ray import serve

from deployments.common import Batched, inject_fault, replica_resources
from mlsd.artifacts import ArtifactStore
from mlsd.blurring.backends import build_backend
from mlsd.blurring.blur import BlurConfig, blur, encode_jpeg
from mlsd.blurring.pipeline import Detections, detect_image
from mlsd.image import decode_image


@serve.deployment(
    ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=16, max_queued_requests=64
)
class Preprocess:
    """Upload bytes -> (H, W, 3) uint8 RGB, EXIF orientation applied, validated; and the
    blurring of an image with its detections into a metadata-free JPEG."""

    def __init__(self, max_bytes: int, max_pixels: int, blur: dict | None = None):
        replica_resources()
        self.max_bytes, self.max_pixels = max_bytes, max_pixels
        self.blur_cfg = BlurConfig(**(blur or {}))

    async def prepare(self, data: bytes) -> np.ndarray:
        """Raises mlsd.image.InvalidImage (a 4xx for the caller) for anything unusable."""
        img = await asyncio.to_thread(decode_image, data, self.max_bytes, self.max_pixels)
        return np.asarray(img.convert("RGB"))

    async def blur(self, image: np.ndarray, det: Detections) -> bytes:
        return await asyncio.to_thread(lambda: encode_jpeg(blur(image, det, self.blur_cfg)))


@serve.deployment(
    ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=32, max_queued_requests=64
)
class Detector(Batched):
    """Images -> faces and plates (our model, the packaged face detectors, or an ensemble of
    them, cut at their served thresholds), at long side ``long_side`` or tiled."""

    batch_method = "detect_batch"

    def __init__(
        self,
        store_uri: str | dict,
        members: list[dict],
        long_side: int = 1024,
        nms_iou: float = 0.5,
        fusion: str = "enclose",
        device: str = "auto",
    ):
        res = replica_resources(device)
        self.device = res.device
        store = ArtifactStore.open(store_uri)
        self.detector = build_backend(
            members, store, res.device, res.threads, res.gpu_ids, nms_iou, fusion
        )
        self.long_side = long_side
        self.detector(np.zeros((64, 64, 3), np.uint8))  # warm up

    def _one(self, image: np.ndarray) -> Detections:
        return detect_image(self.detector, image, self.long_side)

    @serve.batch(max_batch_size=4, batch_wait_timeout_s=0.01)
    async def detect_batch(self, images: list[np.ndarray]) -> list[Detections]:
        return await asyncio.to_thread(lambda: [self._one(im) for im in images])

    async def detect(self, image: np.ndarray) -> Detections:
        await inject_fault(self._fail_with, "detector")
        return await self.detect_batch(image)
