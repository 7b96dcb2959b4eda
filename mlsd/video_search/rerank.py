"""Reranking of video search results: the book's business rules after fusion.

Drop videos that are unavailable, private or blocked; collapse near-duplicates (pooled-feature
signatures within ``dedup_bits`` Hamming distance: the better-ranked copy stays); optional
freshness boost for recently published videos.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from mlsd.video_search.catalogue import VideoDoc
from mlsd.video_search.fusion import Fused


@dataclass
class VideoRerankConfig:
    dedup_bits: int = 8  # 64-bit signatures this close (~22 degrees) are near-duplicates; -1 off
    freshness_boost: float = 0.0  # added to the fused score of a video published "now"
    freshness_half_life_days: float = 30.0

    def to_dict(self) -> dict:
        return asdict(self)


def rerank_videos(
    fused: list[Fused],
    docs: dict[int, VideoDoc],
    k: int,
    now: float,
    cfg: VideoRerankConfig | None = None,
) -> list[tuple[Fused, VideoDoc]]:
    cfg = cfg or VideoRerankConfig()
    scored = []
    for f in fused:
        d = docs.get(f.doc_id)
        if d is None or not d.available or d.private or d.blocked:
            continue
        score = f.score
        if cfg.freshness_boost and d.published > 0:
            age_days = max(now - d.published, 0.0) / 86400.0
            score += cfg.freshness_boost * 0.5 ** (age_days / cfg.freshness_half_life_days)
        scored.append((score, f, d))
    scored.sort(key=lambda x: -x[0])
    kept: list[tuple[Fused, VideoDoc]] = []
    sigs: list[np.ndarray] = []
    for score, f, d in scored:
        sig = np.asarray(d.signature, np.int8)
        if (
            cfg.dedup_bits >= 0
            and len(sig)
            and any(len(s) == len(sig) and int((s != sig).sum()) <= cfg.dedup_bits for s in sigs)
        ):
            continue
        if len(sig):
            sigs.append(sig)
        kept.append((Fused(f.doc_id, score, f.sources), d))
        if len(kept) == k:
            break
    return kept
