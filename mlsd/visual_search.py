"""Visual search, the pure pieces the Serve deployments wrap (and benchmarks call directly).

- :class:`ImageEncoderModel`: bytes -> validated image -> model input -> embedding, with the
  runner backend (torch / onnx / onnx-int8) chosen by configuration;
- :class:`CatalogueIndex`: the artifact's index + metadata, plus the live-addition log;
- :func:`search_pipeline`: encode -> retrieve -> rerank, in one process.

Artifact ``visual_search`` files: ``encoder.pt`` (state dict), ``encoder.onnx``,
``encoder.int8.onnx``, ``index.faiss``, ``catalogue.parquet`` (image_id, owner, private,
unsafe, signature, label); the manifest's config holds the encoder config.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mlsd.artifacts import Artifact, ArtifactError
from mlsd.catalogue import CatalogueLog
from mlsd.image import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS, decode_image, dhash, to_array
from mlsd.index import VectorIndex
from mlsd.models.encoder import EncoderConfig, build_encoder
from mlsd.rerank import ImageMeta, RerankConfig, rerank
from mlsd.runtime import ModelRunner, OnnxRunner, TorchRunner

ENCODER_FILES = {"torch": "encoder.pt", "onnx": "encoder.onnx", "onnx-int8": "encoder.int8.onnx"}


def load_encoder_module(artifact: Artifact) -> torch.nn.Module:
    cfg = EncoderConfig.from_dict(artifact.config.get("encoder", {}))
    model = build_encoder(cfg)
    path = artifact.file("encoder.pt")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except Exception as e:  # corrupt or mismatched weights: name the file
        raise ArtifactError(f"cannot load encoder weights {path}: {e}") from e
    return model.eval()


class ImagePreprocessor:
    """Validated upload bytes -> ((C, S, S) model input, near-duplicate signature).

    Separate from the model so the CPU-bound decoding can run at the edge (the ingress),
    away from the model replicas, as the book splits preprocessing from inference.
    """

    def __init__(
        self,
        cfg: EncoderConfig,
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ):
        self.cfg, self.max_bytes, self.max_pixels = cfg, max_bytes, max_pixels

    def __call__(self, data: bytes) -> tuple[np.ndarray, str]:
        img = decode_image(data, self.max_bytes, self.max_pixels)
        x = to_array(img, size=self.cfg.image_size, channels=self.cfg.in_channels)
        return x, dhash(x)


class ImageEncoderModel:
    """Turns uploaded bytes into embeddings with one configured backend."""

    def __init__(
        self,
        artifact: Artifact,
        backend: str = "torch",
        num_threads: int | None = None,
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ):
        if backend not in ENCODER_FILES:
            raise ValueError(f"encoder backend must be one of {sorted(ENCODER_FILES)}")
        self.cfg = EncoderConfig.from_dict(artifact.config.get("encoder", {}))
        self.backend = backend
        self.version = f"{artifact.version}:{backend}"
        self.preprocess = ImagePreprocessor(self.cfg, max_bytes, max_pixels)
        if backend == "torch":
            self.runner: ModelRunner = TorchRunner(load_encoder_module(artifact), num_threads)
        else:
            path = artifact.file(ENCODER_FILES[backend])
            try:
                self.runner = OnnxRunner(path, num_threads)
            except Exception as e:
                raise ArtifactError(f"cannot load ONNX model {path}: {e}") from e

    def encode(self, batch: np.ndarray) -> np.ndarray:
        """(B, C, S, S) -> (B, D) L2-normalised embeddings."""
        out = self.runner.run(batch).astype(np.float32)
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


@dataclass
class SearchHit:
    image_id: int
    score: float


class CatalogueIndex:
    """The searchable catalogue: artifact index + metadata + replayed live additions."""

    def __init__(self, artifact: Artifact, live_log: str | Path | None = None):
        import pyarrow.parquet as pq

        self.version = artifact.version
        index_path = artifact.file("index.faiss")
        try:
            self.index = VectorIndex.load(index_path)
        except Exception as e:
            raise ArtifactError(f"cannot read index {index_path}: {e}") from e
        meta_path = artifact.file("catalogue.parquet")
        try:
            table = pq.read_table(meta_path).to_pydict()
        except Exception as e:
            raise ArtifactError(f"cannot read catalogue metadata {meta_path}: {e}") from e
        self.meta: dict[int, ImageMeta] = {
            int(i): ImageMeta(int(i), o, bool(p), bool(u), s)
            for i, o, p, u, s in zip(
                table["image_id"],
                table["owner"],
                table["private"],
                table["unsafe"],
                table["signature"],
                strict=True,
            )
        }
        if len(self.meta) != len(self.index):
            raise ArtifactError(
                f"artifact {artifact.name}/{artifact.version}: index has {len(self.index)} "
                f"vectors but catalogue.parquet {len(self.meta)} rows"
            )
        self._lock = threading.Lock()
        self._seq = 0
        self.skipped_other_model = 0
        self.log = CatalogueLog(live_log) if live_log else None
        self.sync()

    def sync(self) -> int:
        """Add log records this replica has not indexed yet; returns how many."""
        if self.log is None:
            return 0
        with self._lock:
            rows = self.log.since(self._seq)
            added = 0
            for seq, live in rows:
                self._seq = seq
                if live.meta.image_id in self.meta:
                    continue  # already folded into this artifact by the indexing job
                if live.model_version.split(":")[0] != self.version:
                    self.skipped_other_model += 1  # embedded by another model: re-index job
                    continue
                self.index.add(live.embedding[None], np.array([live.meta.image_id]))
                self.meta[live.meta.image_id] = live.meta
                added += 1
            return added

    def search(self, queries: np.ndarray, k: int) -> list[list[SearchHit]]:
        self.sync()
        with self._lock:
            scores, ids = self.index.search(queries, k)
        return [
            [SearchHit(int(i), float(s)) for s, i in zip(srow, irow, strict=True) if i >= 0]
            for srow, irow in zip(scores, ids, strict=True)
        ]

    def add(
        self,
        embedding: np.ndarray,
        model_version: str,
        owner: str | None,
        private: bool,
        unsafe: bool,
        signature: str | None,
        image: bytes | None,
    ) -> int:
        if self.log is None:
            raise RuntimeError("this catalogue has no live log configured: additions disabled")
        if embedding.size != self.index.dim:
            raise ValueError(f"embedding has {embedding.size} dims, index {self.index.dim}")
        image_id = self.log.append(
            embedding, model_version, owner, private, unsafe, signature, image
        )
        self.sync()
        return image_id

    def __len__(self) -> int:
        return len(self.index)


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
    emb = encoder.encode(x[None])
    hits = catalogue.search(emb, k * overfetch)[0]
    kept = rerank([(h.image_id, h.score) for h in hits], catalogue.meta, k, user_id, rerank_cfg)
    return [SearchHit(i, s) for i, s in kept]
