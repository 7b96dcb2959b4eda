"""Blurring's drift monitoring on the real photos: held-out photos stay quiet; the same
photos at night (darkened, gamma, sensor noise: a synthetic transform) fire."""

import numpy as np
import pytest

from mlsd.blurring import data as bdata
from mlsd.blurring.features import drift_features, drift_reference
from tests.drift import false_alarm_rate, monitor_over, moved


@pytest.fixture(scope="module")
def photos():
    try:
        train = bdata.faces("train")[::3] + bdata.plates("train")[::3]
        val = bdata.faces("val") + bdata.plates("val")  # held out, both kinds
    except bdata.DataNotFound:
        pytest.skip("needs the face and plate photos")
    ref = drift_reference((bdata.load_rgb(e.path) for e in train), "test: every 3rd train photo")
    return ref, [bdata.load_rgb(e.path) for e in val]


def night(image: np.ndarray, rng) -> np.ndarray:
    """Synthetic low light: a quarter of the exposure, gamma 1.5, a blue cast, noise."""
    x = (image.astype(np.float32) / 255.0) ** 1.5 * 0.25 * np.array([0.8, 0.9, 1.1])
    x = x + rng.normal(0, 0.02, x.shape)
    return (np.clip(x, 0, 1) * 255).astype(np.uint8)


def test_held_out_photos_stay_quiet(photos):
    """Windows of 40 held-out photos, faces and plates mixed as in training (a window of
    plates alone is another population, and is flagged); 5 shuffles of the 124 photos."""
    ref, val = photos
    feats = [drift_features(im) for im in val]
    rng = np.random.default_rng(0)
    order = [i for _ in range(5) for i in rng.permutation(len(feats))[:120]]
    mon = monitor_over(ref, (feats[i] for i in order), window=40, min_window=40)
    assert false_alarm_rate(mon) <= 0.1


def test_night_time_photos_fire(photos):
    ref, val = photos
    rng = np.random.default_rng(0)
    mon = monitor_over(ref, (drift_features(night(im, rng)) for im in val[:100]), window=50)
    assert mon.drifted_windows == 2
    assert {"brightness", "contrast"} <= moved(mon), moved(mon)
