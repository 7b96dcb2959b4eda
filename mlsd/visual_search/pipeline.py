"""Visual search end to end in one process: what serving and offline evaluation share.

- :class:`ImageEncoderModel`: model input (B, C, S, S) -> L2-normalised embeddings through the
  one runner interface (torch / onnx / onnx-int8 files of the artifact), on the device and
  with the threads the caller was given;
- :func:`search_pipeline`: bytes -> preprocess -> encode -> retrieve + rerank
  (:meth:`CatalogueIndex.retrieve`), the same steps the Serve graph runs across replicas.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mlsd.artifacts import Artifact
from mlsd.image import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS
from mlsd.runtime import arun, load_runner, warm_up
from mlsd.visual_search.artifact import ENCODER_FILES, load_encoder_module
from mlsd.visual_search.catalogue import CatalogueIndex, SearchHit
from mlsd.visual_search.features import ImagePreprocessor
from mlsd.visual_search.model import EncoderConfig
from mlsd.visual_search.rerank import RerankConfig


class ImageEncoderModel:
    """Turns preprocessed images into embeddings with one configured backend."""

    def __init__(
        self,
        artifact: Artifact,
        backend: str = "torch",
        num_threads: int | None = None,
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        device: str = "auto",
        gpu_ids: Sequence | None = None,
        server: dict | None = None,
    ):
        """``server``: where a ``triton`` / ``triton-int8`` backend's model runs
        (:class:`mlsd.runtime.TritonRunner` arguments)."""
        self.cfg = EncoderConfig.from_dict(artifact.config.get("encoder", {}))
        self.backend = backend
        self.version = f"{artifact.name}/{artifact.version}:{backend}"
        self.preprocess = ImagePreprocessor(self.cfg, max_bytes, max_pixels)
        self.runner = load_runner(
            artifact,
            backend,
            ENCODER_FILES,
            lambda: load_encoder_module(artifact),
            device=device,
            num_threads=num_threads,
            gpu_ids=gpu_ids,
            server=server,
            what="encoder",
        )
        self.device = self.runner.device
        c, s = self.cfg.in_channels, self.cfg.image_size
        warm_up(self.runner, np.zeros((1, c, s, s), np.float32))

    def encode(self, batch: np.ndarray) -> np.ndarray:
        """(B, C, S, S) -> (B, D) L2-normalised embeddings."""
        return _normalise(self.runner.run(batch))

    async def aencode(self, batch: np.ndarray) -> np.ndarray:
        """``encode`` awaited: Triton's asyncio client, or the in-process runner in a thread."""
        return _normalise(await arun(self.runner, batch))


def _normalise(out: np.ndarray) -> np.ndarray:
    out = out.astype(np.float32)  # (B, D)
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


def search_pipeline(
    encoder: ImageEncoderModel,
    catalogue: CatalogueIndex,
    data: bytes,
    k: int,
    user_id: str | None = None,
    rerank_cfg: RerankConfig | None = None,
    overfetch: int = 4,
) -> list[SearchHit]:
    """The serving graph in one process: encode -> retrieve (k x overfetch) -> rerank."""
    x, _ = encoder.preprocess(data)
    emb = encoder.encode(x[None])[0]
    return catalogue.retrieve(emb, k, user_id, rerank_cfg, overfetch)


def drift_observation(
    features: dict[str, float], embedding: np.ndarray, hits: list[tuple[int, float]] | None
) -> dict:
    """What drift monitoring records of one served image: its input features, its (D,)
    embedding and, for a search, the top hit's similarity (the reference's stream names)."""
    top = hits[0][1] if hits else None
    return {**features, "image": embedding, "top1_similarity": top}
