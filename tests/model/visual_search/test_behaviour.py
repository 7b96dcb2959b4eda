"""Behaviour of the visual search pipeline a user relies on, on a small real artifact."""

from __future__ import annotations

import pytest

from mlsd.artifacts import ArtifactStore
from mlsd.visual_search.catalogue import CatalogueIndex
from mlsd.visual_search.pipeline import ImageEncoderModel, search_pipeline
from mlsd.visual_search.rerank import RerankConfig
from tests.conftest import catalogue_images, jpeg_bytes, new_objects, new_store, png_bytes


@pytest.fixture(scope="module")
def pipeline(tiny_store):

    art = ArtifactStore(tiny_store).load("visual_search")
    return ImageEncoderModel(art, "onnx", device="cpu"), CatalogueIndex(art)


def test_png_and_jpeg_of_one_image_give_the_same_top1(pipeline):
    """The file format is not the content: a JPEG (lossy, RGB) of a catalogue image finds what
    its PNG finds first: the image itself."""

    encoder, catalogue = pipeline
    images, _ = catalogue_images(40)
    for i in range(0, 40, 4):
        png = search_pipeline(encoder, catalogue, png_bytes(images[i]), k=1)
        jpg = search_pipeline(encoder, catalogue, jpeg_bytes(images[i]), k=1)
        assert png[0].image_id == jpg[0].image_id == i


def test_near_duplicates_are_shown_once(tiny_store, tmp_path):
    """The reranker's near-duplicate rule: a catalogue image and its exact copy added live are
    one result, not two (and with the rule off, the copy does come back: the test sees it)."""

    art = ArtifactStore(tiny_store).load("visual_search")
    encoder = ImageEncoderModel(art, "onnx", device="cpu")
    catalogue = CatalogueIndex(art, new_store(tmp_path / "live.db"), new_objects(tmp_path / "o"))
    images, _ = catalogue_images(1)
    data = png_bytes(images[0])
    x, signature = encoder.preprocess(data)
    copy = catalogue.add(
        encoder.encode(x[None])[0], art.version, None, False, False, signature, data
    )
    hits = search_pipeline(encoder, catalogue, data, k=10)
    ids = [h.image_id for h in hits]
    assert len(set(ids)) == len(ids) == 10 and len({0, copy} & set(ids)) == 1, ids
    off = search_pipeline(
        encoder, catalogue, data, k=10, rerank_cfg=RerankConfig(near_duplicate_bits=-1)
    )
    assert {0, copy} <= {h.image_id for h in off}
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True)  # best first
