"""The blurring data sets, each read by its own reader into one box format.

A :class:`Example` is an image path plus its ground-truth boxes (N, 4) as float32
``x1, y1, x2, y2`` in the image's own pixels (clipped to it) and labels (N,) int64
(:data:`FACE` or :data:`PLATE`). Splits are fixed and documented:

- faces train / validation: ``face_mask_detection_train`` sorted by numeric id, every 8th image
  to validation (the test set ``face_mask_detection`` is never trained or tuned on);
- plates: ``openalpr_plates`` eu and us, per region sorted by file name, ``i % 3 == 0`` test,
  the rest train (validation: every 8th of the train part);
- ``dlib_faces_pascal``: a smoke test.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

FACE, PLATE = 1, 2
LABELS = {FACE: "face", PLATE: "plate"}
DATA_ROOT = Path(__file__).resolve().parents[3] / "shared" / "data"


class DataNotFound(FileNotFoundError):
    pass


@dataclass
class Example:
    path: Path
    boxes: np.ndarray  # (N, 4) float32 x1 y1 x2 y2, pixels of the stored image
    labels: np.ndarray  # (N,) int64
    width: int
    height: int
    source: str = ""
    meta: dict = field(default_factory=dict)


def data_root(root: str | Path | None = None) -> Path:
    return Path(root) if root else DATA_ROOT


def _clip(boxes: np.ndarray, w: int, h: int) -> np.ndarray:
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, w)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, h)
    keep = (boxes[:, 2] - boxes[:, 0] >= 1) & (boxes[:, 3] - boxes[:, 1] >= 1)
    return boxes[keep]


def _numeric_key(p: Path):
    m = re.search(r"(\d+)", p.stem)
    return (int(m.group(1)) if m else -1, p.name)


def read_voc_faces(folder: str | Path) -> list[Example]:
    """PASCAL VOC XML (face mask data set): every object is a face, whatever its mask class."""
    folder = Path(folder)
    ann = folder / "annotations"
    if not ann.is_dir():
        raise DataNotFound(f"no VOC annotations under {folder}")
    out = []
    for xml in sorted(ann.glob("*.xml"), key=_numeric_key):
        root = ET.parse(xml).getroot()
        w = int(root.findtext("size/width"))
        h = int(root.findtext("size/height"))
        name = root.findtext("filename")
        path = folder / "images" / name
        if not path.exists():  # the train copy is JPEG where the XML says PNG
            alt = sorted((folder / "images").glob(Path(name).stem + ".*"))
            if not alt:
                continue
            path = alt[0]
        boxes = [
            [float(o.findtext(f"bndbox/{k}")) for k in ("xmin", "ymin", "xmax", "ymax")]
            for o in root.iter("object")
        ]
        boxes = _clip(np.array(boxes, np.float32), w, h)
        out.append(Example(path, boxes, np.full(len(boxes), FACE, np.int64), w, h, "voc"))
    return out


def read_openalpr(folder: str | Path) -> list[Example]:
    """OpenALPR benchmark: one ``file x y w h text`` line per image, one plate each."""
    from PIL import Image

    folder = Path(folder)
    txts = sorted(folder.glob("*.txt"))
    if not txts:
        raise DataNotFound(f"no OpenALPR label files under {folder}")
    out = []
    for txt in txts:
        if txt.name == "SOURCE.txt":
            continue
        parts = txt.read_text().strip().split("\t")
        if len(parts) < 5:
            parts = txt.read_text().split()
        path = folder / parts[0]
        if not path.exists():
            continue
        x, y, bw, bh = (float(v) for v in parts[1:5])
        with Image.open(path) as im:
            w, h = im.size
        boxes = _clip(np.array([[x, y, x + bw, y + bh]], np.float32), w, h)
        text = parts[5] if len(parts) > 5 else ""
        out.append(
            Example(path, boxes, np.full(len(boxes), PLATE, np.int64), w, h, "openalpr",
                    {"text": text})
        )  # fmt: skip
    return sorted(out, key=lambda e: e.path.name)


def read_dlib(xml: str | Path) -> list[Example]:
    """dlib imglab XML: ``<image file=...><box top= left= width= height=/>``."""
    xml = Path(xml)
    root = ET.parse(xml).getroot()
    out = []
    for img in root.iter("image"):
        path = xml.parent / img.get("file")
        from PIL import Image

        with Image.open(path) as im:
            w, h = im.size
        boxes = [
            [float(b.get("left")), float(b.get("top")),
             float(b.get("left")) + float(b.get("width")),
             float(b.get("top")) + float(b.get("height"))]
            for b in img.iter("box")
            if b.get("ignore") != "1"
        ]  # fmt: skip
        boxes = _clip(np.array(boxes, np.float32), w, h)
        out.append(Example(path, boxes, np.full(len(boxes), FACE, np.int64), w, h, "dlib"))
    return out


def faces(split: str, root: str | Path | None = None) -> list[Example]:
    """``train`` | ``val`` (carved out of the training photos) | ``test`` (held out)."""
    base = data_root(root)
    if split == "test":
        return read_voc_faces(base / "face_mask_detection")
    exs = read_voc_faces(base / "face_mask_detection_train")
    if split == "val":
        return exs[::8]
    if split == "train":
        return [e for i, e in enumerate(exs) if i % 8 != 0]
    raise ValueError(f"unknown split {split!r}")


def plates(split: str, root: str | Path | None = None, regions=("eu", "us")) -> list[Example]:
    """Per region, sorted by file name: ``i % 3 == 0`` test; of the rest every 8th is val."""
    base = data_root(root)
    out = []
    for region in regions:
        exs = read_openalpr(base / "openalpr_plates" / region)
        test = [e for i, e in enumerate(exs) if i % 3 == 0]
        rest = [e for i, e in enumerate(exs) if i % 3 != 0]
        for e in exs:
            e.meta["region"] = region
        if split == "test":
            out += test
        elif split == "val":
            out += rest[::8]
        elif split == "train":
            out += [e for i, e in enumerate(rest) if i % 8 != 0]
        else:
            raise ValueError(f"unknown split {split!r}")
    return out


def dlib_smoke(root: str | Path | None = None) -> list[Example]:
    base = data_root(root) / "dlib_faces_pascal"
    return read_dlib(base / "training.xml") + read_dlib(base / "testing.xml")


def load_rgb(path: str | Path) -> np.ndarray:
    """(H, W, 3) uint8, EXIF orientation applied (boxes of these sets are for stored pixels,
    and none of them carry an orientation tag; checked in a test)."""
    from PIL import Image, ImageOps

    with Image.open(path) as im:
        return np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
