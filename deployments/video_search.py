"""Video search deployments: the query text encoder (batched), the retriever over video
vectors, the inverted index, and the indexing path for new videos."""

from __future__ import annotations

import asyncio
import time

import numpy as np
from ray import serve

from deployments.faults import inject_fault
from mlsd.artifacts import ArtifactStore
from mlsd.index import IndexConfig, VectorIndex
from mlsd.text_search import TextIndex
from mlsd.video import SampleConfig, VideoError, decode_sampled
from mlsd.video_catalogue import VideoCatalogue, VideoDoc, VideoLog, signature
from mlsd.video_search import FrameEncoder, load_video_text, pool_video


@serve.deployment(ray_actor_options={"num_cpus": 0.25}, max_ongoing_requests=64)
class TextEncoder:
    """Query text -> vector in the text-video space (sentence encoder + the model's text head)."""

    def __init__(
        self,
        store_uri: str,
        model_artifact: str,
        version: str,
        max_batch_size: int = 16,
        batch_wait_timeout_s: float = 0.005,
        fail_with: str | None = None,
    ):
        from mlsd.text import SentenceEncoder

        art = ArtifactStore(store_uri).load(model_artifact, version)
        self.model = load_video_text(art)
        self.text = SentenceEncoder(art.config.get("text_model", "offline:all-MiniLM-L6-v2"))
        self.version = art.version
        self.encode_batch.set_max_batch_size(max_batch_size)
        self.encode_batch.set_batch_wait_timeout_s(batch_wait_timeout_s)
        self._fail_with = fail_with

    def _encode(self, texts: list[str]) -> list[np.ndarray]:
        import torch

        with torch.inference_mode():
            t = torch.as_tensor(self.text.encode(texts))
            return list(self.model.embed_text(t).numpy())

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.005)
    async def encode_batch(self, texts: list[str]) -> list[np.ndarray]:
        return await asyncio.to_thread(self._encode, texts)

    async def encode(self, text: str) -> np.ndarray:
        await inject_fault(self._fail_with, "text encoder")
        return await self.encode_batch(text)


@serve.deployment(ray_actor_options={"num_cpus": 0.25}, max_ongoing_requests=64)
class VideoRetriever:
    """ANN search over the catalogue's video vectors as one model version projects them;
    replays the durable log of added videos before each search."""

    def __init__(
        self,
        store_uri: str,
        model_artifact: str,
        model_version: str,
        catalogue_artifact: str,
        catalogue_version: str,
        live_log: str | None = None,
        fail_with: str | None = None,
    ):
        import torch

        store = ArtifactStore(store_uri)
        self.model = load_video_text(store.load(model_artifact, model_version))
        self.catalogue = VideoCatalogue(store.load(catalogue_artifact, catalogue_version), live_log)
        self.catalogue.refresh()
        ids, feat, prob = self.catalogue.arrays()
        with torch.inference_mode():
            vecs = self.model.embed_video(torch.as_tensor(feat), torch.as_tensor(prob)).numpy()
        self.index = VectorIndex.build(vecs, ids, IndexConfig())
        self._fail_with = fail_with

    def _refresh(self) -> None:
        import torch

        new = self.catalogue.refresh()
        if new:
            ids, feat, prob = self.catalogue.arrays()
            n = len(new)
            with torch.inference_mode():
                v = self.model.embed_video(torch.as_tensor(feat[-n:]), torch.as_tensor(prob[-n:]))
            self.index.add(v.numpy(), ids[-n:])

    def _search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        self._refresh()
        scores, ids = self.index.search(q[None], k)
        keep = ids[0] >= 0
        return ids[0][keep], scores[0][keep]

    async def search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        await inject_fault(self._fail_with, "video retriever")
        return await asyncio.to_thread(self._search, q, k)

    async def docs(self, ids: list[int]) -> dict[int, VideoDoc]:
        await asyncio.to_thread(self._refresh)
        return {i: self.catalogue.docs[i] for i in ids if i in self.catalogue.docs}

    def info(self) -> dict:
        return {"version": self.catalogue.version, "videos": len(self.index)}


@serve.deployment(ray_actor_options={"num_cpus": 0.1}, max_ongoing_requests=64)
class TextSearch:
    """BM25 over title, description and tags (tantivy, in memory per replica), rebuilt from
    the catalogue artifact at start and kept current from the durable log."""

    def __init__(
        self,
        store_uri: str,
        catalogue_artifact: str,
        catalogue_version: str,
        live_log: str | None = None,
        boosts: dict | None = None,
        fail_with: str | None = None,
    ):
        self.catalogue = VideoCatalogue(
            ArtifactStore(store_uri).load(catalogue_artifact, catalogue_version), live_log
        )
        self.index = TextIndex(boosts=boosts or {"title": 2.0, "tags": 1.5})
        for d in [*self.catalogue.docs.values(), *self.catalogue.refresh()]:
            self.index.add(d.video_id, title=d.title, description=d.description, tags=d.tags)
        self.index.commit()
        self._fail_with = fail_with

    def _search(self, q: str, k: int) -> tuple[np.ndarray, np.ndarray]:
        new = self.catalogue.refresh()
        for d in new:
            self.index.add(d.video_id, title=d.title, description=d.description, tags=d.tags)
        if new:
            self.index.commit()
        return self.index.search(q, k)

    async def search(self, q: str, k: int) -> tuple[np.ndarray, np.ndarray]:
        await inject_fault(self._fail_with, "text search")
        return await asyncio.to_thread(self._search, q, k)


@serve.deployment(ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=4)
class VideoIndexer:
    """The indexing path: decode + sample, frame encoder, pool over time, commit to the log.
    Every model version projects the logged features itself, so one indexer serves all."""

    def __init__(self, live_log: str, sample: dict | None = None):
        self.sample = SampleConfig(**(sample or {}))
        self.frames = FrameEncoder()
        self.log = VideoLog(live_log)

    def _index(self, src, doc: dict) -> dict:
        t0 = time.perf_counter()
        v = decode_sampled(src, self.sample)  # raises VideoError: the ingress maps it to 4xx
        feat, prob = pool_video(*self.frames(v.frames))
        video = VideoDoc(
            video_id=0,
            duration=float(v.info.duration),
            published=time.time(),
            signature=signature(feat),
            **doc,
        )
        video_id = self.log.append(video, feat, prob)
        return {
            "video_id": video_id,
            "frames": len(v.frames),
            "duration": float(v.info.duration),
            "seconds": time.perf_counter() - t0,
        }

    async def index(self, src, doc: dict) -> dict:
        """src: the uploaded bytes or a URI (fsspec). A file that is not a usable video comes
        back as {"error": reason, "detail": ...}: a caller's mistake, not this replica's."""
        try:
            if isinstance(src, str):
                src = await asyncio.to_thread(_read_uri, src, self.sample.max_bytes)
            return await asyncio.to_thread(self._index, src, doc)
        except VideoError as e:
            return {"error": e.reason, "detail": e.detail}


def _read_uri(uri: str, max_bytes: int) -> bytes:
    import fsspec

    try:
        with fsspec.open(uri, "rb") as f:
            data = f.read(max_bytes + 1)
    except (OSError, ValueError) as e:
        raise VideoError("unreadable", f"cannot read {uri}: {e}") from None
    if len(data) > max_bytes:
        raise VideoError("too_large", f"over {max_bytes} bytes")
    return data
