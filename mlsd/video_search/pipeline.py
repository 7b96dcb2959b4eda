"""Video search without Ray: the two retrieval branches over a live catalogue, the indexing path,
and fusion + reranking. The Serve deployments hold one object each; evaluation calls the same.

- :class:`VisualBranch`: the catalogue's videos projected by one text-video model version into
  a faiss index, kept current from the durable log of uploads (``refresh``);
- :class:`TextBranch`: BM25 over title, description and tags (stop words dropped), kept
  current the same way; its hits carry their query coverage as the strength fusion reads;
- :class:`VideoIndexing`: an upload -> decoded, sampled frames -> frame encoder -> pooled
  features -> committed to the log (the book's indexing pipeline);
- :func:`fuse_and_rerank`: the branches' ranked lists -> fusion -> reranking rules -> top k
  (served by ``VisualBranch.fuse_and_rerank``, where the docs are).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping

import numpy as np
import torch

from mlsd.image import encode_image
from mlsd.index import IndexConfig, VectorIndex
from mlsd.text_index import TextIndex
from mlsd.uris import URIReadError, read_capped
from mlsd.video import SampleConfig, VideoError, decode_sampled
from mlsd.video_search.catalogue import VideoCatalogue, VideoDoc, VideoLog, signature
from mlsd.video_search.fusion import Fused, FusionConfig, fuse
from mlsd.video_search.model import FrameEncoder, VideoTextModel, pool_video
from mlsd.video_search.rerank import VideoRerankConfig, rerank_videos

Ranked = tuple[np.ndarray, np.ndarray]  # (ids, scores) best first
log = logging.getLogger(__name__)
DEFAULT_BOOSTS = {"title": 2.0, "tags": 1.5}


class VisualBranch:
    """ANN search over the catalogue's video vectors as one model version projects them."""

    def __init__(self, catalogue: VideoCatalogue, model: VideoTextModel):
        self.catalogue, self.model = catalogue, model.eval()
        self._lock = threading.Lock()
        self.catalogue.refresh()
        ids, feat, prob = self.catalogue.arrays()
        self.index = VectorIndex.build(self._project(feat, prob), ids, IndexConfig())
        self.index.remove(sorted(self.catalogue.deleted))  # catalogue videos deleted since

    @torch.inference_mode()
    def _project(self, feat: np.ndarray, prob: np.ndarray) -> np.ndarray:
        # (N, 1280), (N, 1000) -> (N, D) unit vectors in the text space
        return self.model.embed_video(torch.as_tensor(feat), torch.as_tensor(prob)).numpy()

    def refresh(self) -> int:
        """Index the videos logged since the last refresh (and drop deleted ones); returns
        how many were added. An edit changes text only: the visual vector is kept."""
        with self._lock:
            r = self.catalogue.refresh()
            if r.new:
                ids, feat, prob = self.catalogue.arrays()
                n = len(r.new)
                self.index.add(self._project(feat[-n:], prob[-n:]), ids[-n:])
            self.index.remove(r.deleted)
            return len(r.new)

    def search(self, query: np.ndarray, k: int) -> Ranked:
        """(D,) query vector -> (ids, cosine scores), best first."""
        self.refresh()
        scores, ids = self.index.search(np.asarray(query, np.float32)[None], k)
        keep = (ids[0] >= 0) & ~np.isin(ids[0], list(self.catalogue.deleted))
        return ids[0][keep], scores[0][keep]

    def docs(self, ids: list[int]) -> dict[int, VideoDoc]:
        self.refresh()
        return {i: self.catalogue.docs[i] for i in ids if i in self.catalogue.docs}

    def fuse_and_rerank(
        self,
        branches: Mapping[str, Ranked],
        k: int,
        now: float,
        fusion: FusionConfig | None = None,
        rerank: VideoRerankConfig | None = None,
    ) -> list[tuple[Fused, VideoDoc]]:
        """:func:`fuse_and_rerank` with this catalogue's docs: where the candidates' docs
        are, so a served query needs no second call to fetch them."""
        fused = fused_candidates(branches, k, fusion)
        docs = self.docs([f.doc_id for f in fused])
        return rerank_videos(fused, docs, k, now, rerank)

    def info(self) -> dict:
        return {"version": self.catalogue.version, "videos": len(self.index)}


class TextBranch:
    """BM25 over the catalogue's text fields (tantivy, in memory), kept current from the log.
    ``language``: the analyser's stop words and stemmer (:func:`mlsd.text_index.analyzer`)."""

    def __init__(
        self,
        catalogue: VideoCatalogue,
        boosts: Mapping[str, float] | None = None,
        language: str = "english",
    ):
        self.catalogue = catalogue
        self.index = TextIndex(boosts=dict(boosts or DEFAULT_BOOSTS), tokenizer=language)
        self._lock = threading.Lock()
        catalogue.refresh()
        self._apply(list(catalogue.docs.values()), [])  # the docs as edited, less deletions

    def _apply(self, docs: list[VideoDoc], deleted: list[int], replace: bool = False) -> None:
        for d in docs:
            if replace:
                self.index.delete(d.video_id)
            self.index.add(d.video_id, title=d.title, description=d.description, tags=d.tags)
        for vid in deleted:
            self.index.delete(vid)
        if docs or deleted:
            self.index.commit()

    def refresh(self) -> int:
        """New videos indexed, edited ones re-indexed, deleted ones removed; -> how many new."""
        with self._lock:
            r = self.catalogue.refresh()
            self._apply(r.new + r.edited, r.deleted, replace=bool(r.edited))
            return len(r.new)

    def search(self, query: str, k: int) -> Ranked:
        """(ids in BM25 order, their query coverage in [0, 1]): rank-based fusion reads the
        order, score-based fusion the coverage (comparable across queries, unlike BM25)."""
        self.refresh()
        ids, _, coverage = self.index.search_with_coverage(query, k)
        return ids, coverage


class VideoIndexing:
    """The indexing path: decode + sample, frame encoder, pool over time, commit to the log.
    Every model version projects the logged (model-independent) features itself."""

    def __init__(self, log: VideoLog, frames: FrameEncoder, sample: SampleConfig | None = None):
        self.log, self.frames, self.sample = log, frames, sample or SampleConfig()

    def index(self, src: bytes | str, doc: Mapping[str, str]) -> dict:
        """src: the video's bytes or a path; raises :class:`VideoError` for a bad video."""
        t0 = time.perf_counter()
        v = decode_sampled(src, self.sample)
        feat, prob = pool_video(*self.frames(v.frames))
        video = VideoDoc(
            video_id=0,
            duration=float(v.info.duration),
            published=time.time(),
            signature=signature(feat),
            **doc,
        )
        thumb, _ = encode_image(v.frames[len(v.frames) // 2])  # the middle sampled frame
        video_id = self.log.append(video, feat, prob, thumb)
        return {
            "video_id": video_id,
            "frames": len(v.frames),
            "duration": float(v.info.duration),
            "seconds": time.perf_counter() - t0,
        }


def catalogue_thumbnail(uri: str, sample: SampleConfig | None = None) -> bytes | None:
    """A catalogue video's thumbnail: its middle frame as JPEG (None if it cannot be read)."""
    if not uri:
        return None
    base = sample or SampleConfig()
    cfg = SampleConfig(fps=None, num_frames=1, size=base.size, max_bytes=base.max_bytes)
    try:
        v = decode_sampled(read_uri(uri, cfg.max_bytes), cfg)
    except VideoError:
        return None
    return encode_image(v.frames[0])[0]


def read_uri(uri: str, max_bytes: int) -> bytes:
    """:func:`mlsd.uris.read_capped`, its failure as a :class:`VideoError` (the indexer's)."""
    try:
        return read_capped(uri, max_bytes)
    except URIReadError as e:
        raise VideoError(e.reason, str(e)) from None


def fused_candidates(
    branches: Mapping[str, Ranked], k: int, fusion: FusionConfig | None = None
) -> list[Fused]:
    """The branches' ranked lists fused (RRF or min-max sum), deep enough for reranking to
    drop some and still fill the top k."""
    return fuse(dict(branches), fusion)[: max(k * 4, k + 10)]


def fuse_and_rerank(
    branches: Mapping[str, Ranked],
    docs: Mapping[int, VideoDoc],
    k: int,
    now: float,
    fusion: FusionConfig | None = None,
    rerank: VideoRerankConfig | None = None,
) -> list[tuple[Fused, VideoDoc]]:
    """Fusion -> reranking rules -> top k, given the candidates' docs."""
    return rerank_videos(fused_candidates(branches, k, fusion), dict(docs), k, now, rerank)
