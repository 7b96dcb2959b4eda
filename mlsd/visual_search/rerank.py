"""Reranking service rules (the book's visual search): privacy, safety, near-duplicates.

Input: retrieval candidates best-first; output: at most k survivors, order kept. Rules:
- an image private to another user is never shown (its owner sees it);
- an image flagged unsafe is never shown;
- a near-duplicate (near-identical signature) of a better-ranked kept image is dropped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from mlsd.image import hamming


@dataclass(frozen=True)
class ImageMeta:
    image_id: int
    owner: str | None = None
    private: bool = False
    unsafe: bool = False
    signature: str | None = None


@dataclass
class RerankConfig:
    drop_unsafe: bool = True
    drop_private_of_others: bool = True
    near_duplicate_bits: int = 3  # max differing signature bits of a near-duplicate; -1 = off


def rerank(
    candidates: Sequence[tuple[int, float]],
    meta: Mapping[int, ImageMeta],
    k: int,
    user_id: str | None = None,
    cfg: RerankConfig | None = None,
) -> list[tuple[int, float]]:
    cfg = cfg or RerankConfig()
    kept: list[tuple[int, float]] = []
    kept_sigs: list[str] = []
    for image_id, score in candidates:
        m = meta.get(image_id)
        if m is None:  # an id without metadata is not servable (e.g. removed meanwhile)
            continue
        if cfg.drop_unsafe and m.unsafe:
            continue
        if cfg.drop_private_of_others and m.private and (m.owner is None or m.owner != user_id):
            continue
        if cfg.near_duplicate_bits >= 0 and m.signature:
            if any(hamming(m.signature, s) <= cfg.near_duplicate_bits for s in kept_sigs):
                continue
            kept_sigs.append(m.signature)
        kept.append((image_id, score))
        if len(kept) >= k:
            break
    return kept
