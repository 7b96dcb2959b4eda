"""Synthetic licence plates painted onto real photos (training only; labelled synthetic).

Why: the project has real plates of two regions (OpenALPR eu and us), and a plate detector
trained on them learns those two formats - white EU strips with a blue band, US plates of a few
states - and misses plates of countries it never saw (Brazil's grey and Mercosur plates, yellow
UK rear plates, square motorcycle plates). Street View must blur plates of every country, so
training paints plates of many formats over the real ones: aspect ratios from square to long
strip, background and text colours, bands, borders, one or two text rows, many fonts, a mild
perspective and lighting that matches the photo. The real photo, its car and its light stay real;
only the plate's design varies. Figures trained with it say ``synthetic plates`` wherever shown.

``paint_plates(image, boxes, labels, rng, p_replace, p_extra)`` returns the painted image, its
boxes and labels; the augmenter calls it before scaling and cropping.
"""

from __future__ import annotations

import string
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from mlsd.blurring.data import PLATE
from mlsd.blurring.evaluation import box_iou

# (background, text) colour pairs seen on plates around the world, RGB
_COLOURS = [
    ((245, 245, 245), (20, 20, 20)),  # white / black (EU, Mercosur, many US states)
    ((250, 215, 40), (20, 20, 20)),  # yellow / black (UK rear, NL, LU, taxis)
    ((200, 200, 200), (25, 25, 25)),  # grey / black (older Brazil)
    ((230, 230, 230), (30, 50, 150)),  # white / blue (several US states)
    ((235, 235, 230), (150, 20, 20)),  # white / red (commercial, temporary)
    ((240, 240, 240), (20, 90, 40)),  # white / green (electric, some US states)
    ((25, 25, 25), (235, 235, 235)),  # black / white (older plates, India commercial)
    ((30, 60, 140), (240, 240, 240)),  # blue / white (diplomatic, some US states)
    ((150, 20, 20), (240, 240, 240)),  # red / white (Brazil commercial)
    ((20, 110, 60), (240, 240, 240)),  # green / white
]
_BANDS = ("none", "left", "top")  # EU blue strip at the left; Mercosur band at the top
_ASPECTS = (1.2, 2.0, 2.0, 3.0, 4.0, 4.7, 5.2)  # width / height: motorcycle ... EU strip


@lru_cache(maxsize=1)
def _font_files() -> tuple[str, ...]:
    """TrueType fonts that ship with matplotlib (a core dependency): sans, mono, serif."""
    try:
        import matplotlib

        folder = Path(matplotlib.__file__).parent / "mpl-data" / "fonts" / "ttf"
        return tuple(
            str(p)
            for p in sorted(folder.glob("*.ttf"))
            if p.name.startswith(("DejaVuSans", "DejaVuSerif", "STIXGeneral", "cmr", "cmss"))
            and not any(s in p.name for s in ("Display", "Italic", "Oblique", "Ita."))
        )
    except ImportError:  # pragma: no cover - Pillow's built-in font then
        return ()


@lru_cache(maxsize=64)
def _font(path: str | None, size: int):

    if path is None:
        return ImageFont.load_default(size)
    return ImageFont.truetype(path, size)


def _plate_text(rng: np.random.Generator, n_rows: int) -> list[str]:
    """Random characters in a few national layouts (L = letter, D = digit)."""

    def fill(pattern: str) -> str:
        return "".join(
            rng.choice(list(string.ascii_uppercase))
            if c == "L"
            else rng.choice(list(string.digits))
            if c == "D"
            else c
            for c in pattern
        )

    if n_rows == 2:  # square plates: letters over digits
        return [fill(str(rng.choice(["LL", "LLL", "DLL"]))), fill(str(rng.choice(["DDD", "DDDD"])))]
    layouts = ["LLL-DDDD", "LLLDLDD", "LL DD LLL", "DLLL DDD", "LL-DDDD", "DDD LLL", "LLDD LLL"]
    return [fill(str(rng.choice(layouts)))]


def render_plate(rng: np.random.Generator, height: int = 96) -> np.ndarray:
    """One synthetic plate, (height, width, 3) uint8, of a random format."""

    aspect = float(rng.choice(_ASPECTS)) * rng.uniform(0.9, 1.1)
    w = max(8, round(height * aspect))
    bg, fg = _COLOURS[rng.integers(len(_COLOURS))]
    bg = tuple(int(np.clip(c + rng.integers(-15, 16), 0, 255)) for c in bg)
    img = Image.new("RGB", (w, height), bg)
    draw = ImageDraw.Draw(img)
    band = _BANDS[rng.integers(len(_BANDS))] if aspect > 2.5 else "none"
    x0, y0, x1, y1 = 0, 0, w, height
    if band == "left":
        bw = round(height * 0.45)
        draw.rectangle([0, 0, bw, height], fill=(20, 50, 160))
        x0 = bw
    elif band == "top":
        bh = round(height * 0.22)
        draw.rectangle([0, 0, w, bh], fill=(20, 50, 160))
        y0 = bh
    if rng.random() < 0.6:  # a border
        t = max(1, round(height * rng.uniform(0.02, 0.06)))
        draw.rectangle([0, 0, w - 1, height - 1], outline=fg, width=t)
    n_rows = 2 if aspect < 2.5 and rng.random() < 0.6 else 1
    rows = _plate_text(rng, n_rows)
    fonts = _font_files()
    path = fonts[rng.integers(len(fonts))] if fonts else None
    row_h = (y1 - y0) / n_rows
    for i, text in enumerate(rows):
        size = max(6, round(row_h * rng.uniform(0.6, 0.8)))
        font = _font(path, size)
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        tw, th = right - left, bottom - top
        scale = min(1.0, 0.9 * (x1 - x0) / max(tw, 1))  # too wide: a smaller size
        if scale < 1.0:
            font = _font(path, max(6, int(size * scale)))
            left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
            tw, th = right - left, bottom - top
        cx, cy = (x0 + x1) / 2, y0 + row_h * (i + 0.5)
        draw.text((cx - tw / 2 - left, cy - th / 2 - top), text, fill=fg, font=font)
    return np.asarray(img)


def _warp_into(image: np.ndarray, plate: np.ndarray, box, rng: np.random.Generator) -> None:
    """Paint ``plate`` into ``box`` (x1, y1, x2, y2) of ``image`` in place: a mild perspective
    (the corners move by up to 6 % of the side), the photo's light and softness."""

    x1, y1, x2, y2 = (int(round(v)) for v in box)
    bw, bh = x2 - x1, y2 - y1
    if bw < 4 or bh < 3:
        return
    ph, pw = plate.shape[:2]
    src = np.float32([[0, 0], [pw, 0], [pw, ph], [0, ph]])
    j = rng.uniform(-0.06, 0.06, (4, 2)) * [bw, bh]
    dst = np.float32([[0, 0], [bw, 0], [bw, bh], [0, bh]]) + j.clip(
        [[0, 0], [-bw, 0], [-bw, -bh], [0, -bh]], [[bw, bh], [0, bh], [0, 0], [bw, 0]]
    )
    m = cv2.getPerspectiveTransform(src, dst.astype(np.float32))
    warped = cv2.warpPerspective(plate, m, (bw, bh), flags=cv2.INTER_AREA)
    mask = cv2.warpPerspective(np.ones((ph, pw), np.float32), m, (bw, bh))[..., None]
    region = image[y1:y2, x1:x2].astype(np.float32)
    # the photo's light: scale to the patch's brightness, a little softness
    gain = np.clip(region.mean() / max(warped.mean(), 1.0), 0.35, 1.3) * rng.uniform(0.85, 1.1)
    out = warped.astype(np.float32) * gain
    if rng.random() < 0.5:
        k = int(rng.choice([3, 5]))
        out = cv2.GaussianBlur(out, (k, k), 0)
    image[y1:y2, x1:x2] = np.clip(mask * out + (1 - mask) * region, 0, 255).astype(np.uint8)


def paint_plates(
    image: np.ndarray,
    boxes: np.ndarray,
    labels: np.ndarray,
    rng: np.random.Generator,
    p_replace: float = 0.5,
    p_extra: float = 0.3,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(H, W, 3) uint8 + (N, 4) xyxy boxes + labels -> painted copy, boxes, labels.

    Each real plate is, with ``p_replace``, covered by a synthetic plate of another format whose
    box contains the real one (no real plate pixels are left outside the label); with
    ``p_extra`` one more plate is painted where no box is, 3-15 % of the photo's width."""
    labels = np.asarray(labels)
    replace = [i for i in np.flatnonzero(labels == PLATE) if rng.random() < p_replace]
    extra = rng.random() < p_extra
    if not replace and not extra:
        return image, boxes, labels
    img = np.array(image, copy=True)
    h, w = img.shape[:2]
    boxes = np.array(boxes, np.float32).reshape(-1, 4)
    out_boxes = boxes.copy()
    for i in replace:
        x1, y1, x2, y2 = boxes[i]
        bw, bh = x2 - x1, y2 - y1
        if bw < 6 or bh < 3:
            continue
        plate = render_plate(rng)
        aspect = plate.shape[1] / plate.shape[0]
        if aspect >= bw / bh:  # wider than the real plate: grow the width
            nh, nw = bh * 1.08, bh * 1.08 * aspect
        else:
            nw, nh = bw * 1.08, bw * 1.08 / aspect
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        nb = np.array([cx - nw / 2, cy - nh / 2, cx + nw / 2, cy + nh / 2], np.float32)
        nb = nb.clip([0, 0, 0, 0], [w, h, w, h])
        _warp_into(img, plate, nb, rng)
        out_boxes[i] = nb
    if extra:
        plate = render_plate(rng)
        pw = w * rng.uniform(0.03, 0.15)
        ph = pw * plate.shape[0] / plate.shape[1]
        for _ in range(10):  # a place that overlaps no labelled box
            x = rng.uniform(0, max(w - pw, 1))
            y = rng.uniform(h * 0.3, max(h - ph, h * 0.3 + 1))
            nb = np.array([x, y, x + pw, y + ph], np.float32).clip(0, [w, h, w, h])
            if not (box_iou(nb[None], out_boxes) > 0).any():
                _warp_into(img, plate, nb, rng)
                out_boxes = np.vstack([out_boxes, nb[None]])
                labels = np.append(labels, PLATE)
                break
    return img, out_boxes, labels
