"""Behaviour of video search a user relies on: a query and its paraphrase find the same video,
through the whole pipeline (query encoder, both branches, fusion, reranking)."""

from __future__ import annotations

import time

import pytest


@pytest.fixture(scope="module")
def search(video_store):
    from mlsd.artifacts import ArtifactStore
    from mlsd.video_search.catalogue import VideoCatalogue
    from mlsd.video_search.model import load_video_text, query_encoder
    from mlsd.video_search.pipeline import TextBranch, VisualBranch, fuse_and_rerank

    store = ArtifactStore(video_store)
    model = load_video_text(store.load("video_text_zeroshot"))
    cat = store.load("video_catalogue")
    visual, text = VisualBranch(VideoCatalogue(cat), model), TextBranch(VideoCatalogue(cat))
    encoder = query_encoder(model, device="cpu")

    def run(q: str, k: int = 3) -> list[str]:
        branches = {"visual": visual.search(encoder.encode([q])[0], 50), "text": text.search(q, 50)}
        docs = visual.docs([int(i) for ids, _ in branches.values() for i in ids])
        kept = fuse_and_rerank(branches, docs, k, time.time())
        return [d.title for _, d in kept]

    return run


@pytest.mark.parametrize(
    "query, paraphrase",
    [
        ("a cartoon rabbit", "an animated bunny waking up"),
        ("bicycles on a city street", "people cycling in town"),
        ("a man on the phone in a car", "someone making a call while driving"),
    ],
)
def test_a_query_and_its_paraphrase_find_the_same_video(search, query, paraphrase):
    a, b = search(query), search(paraphrase)
    assert a[0] == b[0], (a, b)
    assert len(set(a) & set(b)) >= 2
