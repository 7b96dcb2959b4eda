"""Synthetic plates painted onto photos (training only): formats vary, labels stay true."""

from __future__ import annotations

import numpy as np
import pytest

from mlsd.blurring.augment import AugmentConfig, Augmenter, draw_scale
from mlsd.blurring.synthetic import PLATE, paint_plates, render_plate


def _photo(h: int = 480, w: int = 640) -> np.ndarray:
    rng = np.random.default_rng(1)
    return rng.integers(60, 120, (h, w, 3), dtype=np.uint8)  # (H, W, 3) a dim textured scene


def test_rendered_plates_come_in_many_formats():
    rng = np.random.default_rng(0)
    plates = [render_plate(rng, height=48) for _ in range(60)]
    aspects = np.array([p.shape[1] / p.shape[0] for p in plates])
    assert all(p.shape[0] == 48 and p.dtype == np.uint8 for p in plates)
    assert aspects.min() < 1.6 and aspects.max() > 4.0  # square motorcycle ... EU strip
    backgrounds = {tuple(int(c) // 64 for c in p[p.shape[0] // 2, 2]) for p in plates}
    assert len(backgrounds) >= 4  # light, yellow, dark, blue, red ... not one design
    # text is drawn: every plate has two tones at least (background and characters)
    assert all(np.abs(p.astype(int) - np.median(p, (0, 1))).max() > 80 for p in plates)


def test_a_painted_plate_covers_the_real_one_and_its_label_contains_it():
    img = _photo()
    boxes = np.array([[300, 300, 360, 330], [50, 50, 90, 100]], np.float32)
    labels = np.array([PLATE, 1])  # a plate and a face
    out, b, lab = paint_plates(img, boxes, labels, np.random.default_rng(3), 1.0, 0.0)
    assert lab.tolist() == labels.tolist()
    nb = b[0]
    assert nb[0] <= 300 and nb[1] <= 300 and nb[2] >= 360 and nb[3] >= 330  # contains the real
    assert not np.array_equal(out[300:330, 300:360], img[300:330, 300:360])  # painted over
    np.testing.assert_array_equal(b[1], boxes[1])  # the face is not touched
    np.testing.assert_array_equal(out[50:100, 50:90], img[50:100, 50:90])
    assert not np.array_equal(out, img) and np.array_equal(img, _photo())  # a copy is painted


def test_an_extra_plate_is_labelled_and_overlaps_no_box():
    img = _photo()
    boxes = np.array([[300, 300, 360, 330]], np.float32)
    rng = np.random.default_rng(5)
    out, b, lab = paint_plates(img, boxes, np.array([PLATE]), rng, 0.0, 1.0)
    assert lab.tolist() == [PLATE, PLATE] and len(b) == 2
    x1, y1, x2, y2 = b[1].round().astype(int)
    assert x2 - x1 >= 0.03 * 640 - 1 and not (x1 < 360 and x2 > 300 and y1 < 330 and y2 > 300)
    assert np.abs(out[y1:y2, x1:x2].astype(int) - img[y1:y2, x1:x2]).mean() > 5
    np.testing.assert_array_equal(out[300:330, 300:360], img[300:330, 300:360])  # kept real


def test_without_probabilities_nothing_is_painted():
    img = _photo()
    boxes = np.array([[300, 300, 360, 330]], np.float32)
    out, b, lab = paint_plates(img, boxes, np.array([PLATE]), np.random.default_rng(0), 0.0, 0.0)
    assert out is img and b is boxes


def test_the_augmenter_paints_plates_when_asked():
    img = _photo(600, 600)
    boxes = np.array([[250, 280, 350, 310]], np.float32)
    cfg = AugmentConfig(long_side=600, scale_jitter=(1.0, 1.0), crop=600, flip=0.0, colour=0.0)
    cfg.blur = 0.0
    plain = Augmenter(cfg, seed=0)(img, boxes, np.array([PLATE]))
    cfg_syn = AugmentConfig(**(cfg.__dict__ | {"synthetic_plates": 1.0, "extra_plates": 1.0}))
    painted = Augmenter(cfg_syn, seed=0)(img, boxes, np.array([PLATE]))
    np.testing.assert_allclose(plain[1], boxes, atol=1)
    assert len(painted[1]) == 2 and (painted[2] == PLATE).all()
    assert not np.array_equal(painted[0], plain[0])


def test_plates_are_painted_at_the_rates_asked():
    """p_replace per real plate and p_extra per photo, each drawn once (a gate drawn before
    them once painted at 0.325 and 0.195 when 0.5 and 0.3 were asked)."""
    img = _photo(240, 320)
    boxes = np.array([[100, 150, 160, 170]], np.float32)
    rng = np.random.default_rng(7)
    replaced = extra = 0
    n = 400
    for _ in range(n):
        _, b, lab = paint_plates(img, boxes, np.array([PLATE]), rng, 0.5, 0.3)
        replaced += not np.array_equal(b[0], boxes[0])
        extra += len(lab) == 2
    assert abs(replaced / n - 0.5) < 0.07 and abs(extra / n - 0.3) < 0.07


def test_plate_scale_gives_one_region_s_plates_every_width():
    """A region photographed at one distance (EU plates ~24 % of the width) is resized so its
    plates span the configured widths; without it they stay in the photo jitter's band."""
    boxes = np.array([[100, 400, 340, 455], [500, 100, 540, 150]], np.float32)  # plate, face
    labels = np.array([PLATE, 1])
    rng = np.random.default_rng(0)

    def widths(cfg: AugmentConfig) -> np.ndarray:
        scales = [draw_scale(cfg, rng, (768, 1024), boxes, labels) for _ in range(2000)]
        return 240 * np.array(scales) / 1024  # (2000,) plate widths, of the long side

    jitter = widths(AugmentConfig(scale_jitter=(0.6, 1.5)))
    assert jitter.min() >= 0.6 * 240 / 1024 - 1e-6  # one band: 14-35 % of the long side
    sized = widths(AugmentConfig(scale_jitter=(0.6, 1.5), plate_scale=1.0))
    assert sized.min() < 0.05 and np.mean(sized < 0.1) > 0.3 and sized.max() > 0.25
    # a photo without plates keeps the photo jitter
    faces_only = draw_scale(
        AugmentConfig(plate_scale=1.0, scale_jitter=(1.0, 1.0)), rng, (768, 1024), boxes[1:], [1]
    )
    assert faces_only == 1.0


def test_plate_scale_settings_out_of_range_are_refused_by_name():
    for bad in ({"plate_scale": 1.5}, {"plate_widths": (0.0, 0.3)}, {"plate_widths": (0.3, 0.1)}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            AugmentConfig(**bad)
