"""Visual search's drift monitoring on real Fashion-MNIST: held-out images stay quiet, rotated
or inverted uploads fire (the serving path's preprocessing, encoder and retrieval)."""

import numpy as np
import pytest

from mlsd.artifacts import ArtifactStore
from mlsd.drift import load_reference
from mlsd.visual_search.catalogue import CatalogueIndex
from mlsd.visual_search.pipeline import ImageEncoderModel, drift_observation
from tests.conftest import fashion_mnist_or_none, png_bytes
from tests.drift import false_alarm_rate, monitor_over, moved

pytestmark = pytest.mark.skipif(fashion_mnist_or_none() is None, reason="needs Fashion-MNIST")


@pytest.fixture(scope="module")
def served(tiny_store):
    art = ArtifactStore(tiny_store).load("visual_search")
    return ImageEncoderModel(art, backend="onnx"), CatalogueIndex(art), load_reference(art)


def _observations(served, images):
    encoder, catalogue, _ = served
    for img in images:
        x, _, feats = encoder.preprocess.prepare(png_bytes(img))
        emb = encoder.encode(x[None])[0]
        hits = [(h.image_id, h.score) for h in catalogue.retrieve(emb, 10)]
        yield drift_observation(feats, emb, hits)


def test_held_out_images_stay_quiet(served):
    held_out = fashion_mnist_or_none().images[400:2400]  # the tiny catalogue is the first 400
    mon = monitor_over(served[2], _observations(served, held_out), window=100)
    assert false_alarm_rate(mon) <= 0.1


@pytest.mark.parametrize(
    "change, streams",
    [
        (lambda im: np.rot90(im, axes=(1, 2)), {"anisotropy", "image"}),
        (lambda im: 255 - im, {"flipped"}),  # the preprocessor flips them back: still a shift
    ],
    ids=["rotated", "inverted"],
)
def test_rotated_or_inverted_uploads_fire(served, change, streams):
    images = change(fashion_mnist_or_none().images[400:600])
    mon = monitor_over(served[2], _observations(served, images), window=100)
    assert mon.drifted_windows == 2
    assert streams <= moved(mon), moved(mon)
