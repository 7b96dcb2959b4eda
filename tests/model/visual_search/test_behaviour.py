"""Behaviour of the visual search pipeline a user relies on, on a small real artifact."""

from __future__ import annotations

import pytest

from tests.conftest import catalogue_images, jpeg_bytes, png_bytes


@pytest.fixture(scope="module")
def pipeline(tiny_store):
    from mlsd.artifacts import ArtifactStore
    from mlsd.visual_search.catalogue import CatalogueIndex
    from mlsd.visual_search.pipeline import ImageEncoderModel

    art = ArtifactStore(tiny_store).load("visual_search")
    return ImageEncoderModel(art, "onnx", device="cpu"), CatalogueIndex(art)


def test_png_and_jpeg_of_one_image_give_the_same_top1(pipeline):
    """The file format is not the content: a JPEG (lossy, RGB) of a catalogue image finds what
    its PNG finds first: the image itself."""
    from mlsd.visual_search.pipeline import search_pipeline

    encoder, catalogue = pipeline
    images, _ = catalogue_images(40)
    for i in range(0, 40, 4):
        png = search_pipeline(encoder, catalogue, png_bytes(images[i]), k=1)
        jpg = search_pipeline(encoder, catalogue, jpeg_bytes(images[i]), k=1)
        assert png[0].image_id == jpg[0].image_id == i


def test_near_duplicates_are_shown_once(pipeline):
    """The reranker's near-duplicate rule: a catalogue image and its exact copy added live are
    one result, not two."""
    import numpy as np

    from mlsd.visual_search.pipeline import search_pipeline

    encoder, catalogue = pipeline
    images, _ = catalogue_images(1)
    hits = search_pipeline(encoder, catalogue, png_bytes(images[0]), k=10)
    assert len({h.image_id for h in hits}) == len(hits) == 10
    scores = np.array([h.score for h in hits])
    assert (np.diff(scores) <= 1e-6).all()  # best first
