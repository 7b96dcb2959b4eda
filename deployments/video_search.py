"""Video search deployments: the batched query encoder, the two retrieval branches (each holds a
live index of the catalogue), and the indexing path for uploads. Each wraps one object of
``mlsd.video_search.pipeline``."""

from __future__ import annotations

import asyncio
import logging

import numpy as np
from ray import serve

from deployments.common import Batched, FaultInjectable, inject_fault, replica_resources
from mlsd.artifacts import ArtifactStore
from mlsd.state import Caller, may_change
from mlsd.video import SampleConfig, VideoError
from mlsd.video_search.catalogue import VideoCatalogue, VideoDoc, VideoLog
from mlsd.video_search.fusion import Fused, FusionConfig
from mlsd.video_search.model import FrameEncoder, load_video_text, served_query_encoder
from mlsd.video_search.pipeline import (
    Ranked,
    TextBranch,
    VideoIndexing,
    VisualBranch,
    catalogue_thumbnail,
    read_uri,
)
from mlsd.video_search.rerank import VideoRerankConfig

log = logging.getLogger("ray.serve")


@serve.deployment(
    ray_actor_options={"num_cpus": 0.25}, max_ongoing_requests=64, max_queued_requests=128
)
class TextEncoder(Batched):
    """Query text -> vector in the text-video space (sentence encoder + the model's text head,
    one model on the replica's device)."""

    def __init__(
        self, store_uri: str | dict, artifact: str, version: str, backend: str, device: str = "auto"
    ):
        res = replica_resources(device)
        art = ArtifactStore.open(store_uri).load(artifact, version)
        self.encoder = served_query_encoder(art, device, res.threads, res.gpu_ids, backend)
        self.device = self.encoder.device

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.005)
    async def encode_batch(self, texts: list[str]) -> list[np.ndarray]:
        return list(await asyncio.to_thread(self.encoder.encode, texts))

    async def encode(self, text: str) -> np.ndarray:
        await inject_fault(self._fail_with, "text encoder")
        return await self.encode_batch(text)


@serve.deployment(
    ray_actor_options={"num_cpus": 0.25}, max_ongoing_requests=64, max_queued_requests=128
)
class VideoRetriever(FaultInjectable):
    """The visual branch, and fusion + reranking where its docs are: the catalogue as one model
    version projects it (+ uploads)."""

    def __init__(
        self,
        store_uri: str | dict,
        artifact: str,
        version: str,
        catalogue_artifact: str,
        catalogue_version: str,
        live_log: str | None = None,
        object_store: str | None = None,
    ):
        replica_resources()
        store = ArtifactStore.open(store_uri)
        art = store.load(catalogue_artifact, catalogue_version)
        catalogue = VideoCatalogue(art, live_log, object_store)  # existing stores, or fail
        self.branch = VisualBranch(catalogue, load_video_text(store.load(artifact, version)))
        self._thumbs: dict[int, bytes | None] = {}

    async def rank(
        self,
        q: np.ndarray | None,
        text: Ranked | None,
        k: int,
        depth: int,
        timeout_s: float,
        now: float,
        fusion: FusionConfig,
        rerank: VideoRerankConfig,
    ) -> tuple[list[tuple[Fused, VideoDoc]] | None, list[str]]:
        """The visual branch's ``depth`` candidates for query vector ``q`` fused with the text
        branch's and reranked here, where the docs are (one call per query). A branch that
        is missing (None: it failed upstream) or fails here is named in the second value;
        with neither, the first is None."""
        branches, degraded = {}, []
        if text is None:
            degraded.append("text")
        else:
            branches["text"] = text
        try:
            if q is None:
                raise LookupError("no query vector")
            await inject_fault(self._fail_with, "video retriever")
            search = asyncio.to_thread(self.branch.search, q, depth)
            branches["visual"] = await asyncio.wait_for(search, timeout_s)
        except Exception as e:  # the text branch still answers
            if not isinstance(e, LookupError):
                log.warning("visual branch failed: %r", e)
            degraded.insert(0, "visual")
        if not branches:
            return None, degraded
        kept = await asyncio.to_thread(
            self.branch.fuse_and_rerank, branches, k, now, fusion, rerank
        )
        return kept, degraded

    def _visible(self, video_id: int, caller: Caller) -> VideoDoc | None:
        self.branch.refresh()
        return self.branch.catalogue.visible(video_id, caller)

    async def get(self, video_id: int, caller: Caller) -> VideoDoc | None:
        """The video's doc if ``caller`` may see it; None (404) otherwise."""
        return await asyncio.to_thread(self._visible, video_id, caller)

    def _thumbnail(self, video_id: int) -> bytes | None:
        cat = self.branch.catalogue
        if (jpeg := cat.thumbnail(video_id)) is not None:
            return jpeg
        if video_id not in self._thumbs:  # a catalogue video: its middle frame, once
            doc = cat.docs.get(video_id)
            if len(self._thumbs) >= 1024:  # bounded: the oldest goes
                self._thumbs.pop(next(iter(self._thumbs)))
            self._thumbs[video_id] = catalogue_thumbnail(doc.uri) if doc else None
        return self._thumbs[video_id]

    async def thumbnail(self, video_id: int, caller: Caller) -> bytes | None:
        if await self.get(video_id, caller) is None:
            return None
        return await asyncio.to_thread(self._thumbnail, video_id)

    def _change(self, video_id: int, fields: dict | None, caller: Caller):
        d = self._visible(video_id, caller)
        if d is None:
            return "not_found", None
        if not may_change(caller, d.owner):
            return "forbidden", None
        log = self.branch.catalogue.log
        if fields is None:
            done = log.delete(video_id, d.uri, caller.user)
            self.branch.refresh()
            return ("deleted" if done else "not_found"), None
        log.edit(video_id, fields, d.uri, caller.user)
        self.branch.refresh()
        return "edited", self.branch.docs([video_id]).get(video_id)

    async def change(
        self, video_id: int, fields: dict | None, caller: Caller
    ) -> tuple[str, VideoDoc | None]:
        """Edit (``fields``) or delete (None) a video, owner or admin only, durable before
        this returns: -> ("edited" | "deleted" | "not_found" | "forbidden", the new doc)."""
        if self.branch.catalogue.log is None:
            return "read_only", None
        return await asyncio.to_thread(self._change, video_id, fields, caller)

    def check_health(self) -> None:
        """Serve's health check: a replica whose state store or object store is missing,
        replaced or unreachable takes no traffic (the error names the store)."""
        if self.branch.catalogue.log is not None:
            self.branch.catalogue.log.check()

    def info(self) -> dict:
        return self.branch.info()


@serve.deployment(
    ray_actor_options={"num_cpus": 0.1}, max_ongoing_requests=64, max_queued_requests=128
)
class TextSearch(FaultInjectable):
    """The text branch: BM25 over title, description and tags, kept current from the log."""

    def __init__(
        self,
        store_uri: str | dict,
        catalogue_artifact: str,
        catalogue_version: str,
        live_log: str | None = None,
        boosts: dict | None = None,
        language: str = "english",
    ):
        art = ArtifactStore.open(store_uri).load(catalogue_artifact, catalogue_version)
        self.branch = TextBranch(VideoCatalogue(art, live_log), boosts, language)

    def check_health(self) -> None:
        """Serve's health check: a replica whose state store is missing, replaced or
        unreachable takes no traffic (the error names the store)."""
        if self.branch.catalogue.log is not None:
            self.branch.catalogue.log.check()

    async def search(self, q: str, k: int) -> tuple[np.ndarray, np.ndarray]:
        await inject_fault(self._fail_with, "text search")
        return await asyncio.to_thread(self.branch.search, q, k)


@serve.deployment(
    ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=4, max_queued_requests=8
)
class VideoIndexer:
    """Uploads -> frame encoder (on the replica's device) -> the durable log."""

    def __init__(
        self,
        live_log: str,
        object_store: str | None = None,
        sample: dict | None = None,
        device: str = "auto",
    ):
        res = replica_resources(device)
        log = VideoLog(live_log, object_store)  # an existing store, or this replica fails
        frames = FrameEncoder(device=device, num_threads=res.threads, gpu_ids=res.gpu_ids)
        self.device = frames.device
        frames(np.zeros((1, 32, 32, 3), np.uint8))  # warm up
        self.indexing = VideoIndexing(log, frames, SampleConfig(**(sample or {})))

    def check_health(self) -> None:
        """Serve's health check: no uploads accepted while the log or its object store is
        missing or unreachable (the error names the store)."""
        self.indexing.log.check()

    async def index(self, src: bytes | str, doc: dict) -> dict:
        """src: the uploaded bytes or a URI (fsspec). A file that is not a usable video comes
        back as {"error": reason, "detail": ...}: a caller's mistake, not this replica's."""
        try:
            if isinstance(src, str):
                src = await asyncio.to_thread(read_uri, src, self.indexing.sample.max_bytes)
            return await asyncio.to_thread(self.indexing.index, src, doc)
        except VideoError as e:
            log.info("video refused: %s", e)  # the full detail stays in the replica's log
            return {"error": e.reason, "detail": e.detail}
