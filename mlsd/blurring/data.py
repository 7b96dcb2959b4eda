"""The blurring data sets, each read by its own reader into one box format.

A user's own boxes come in the three formats labelled boxes usually come in, each mapped to
face / plate by a class map (:func:`parse_class_map`; classes it does not name are left out
and counted): COCO JSON (:func:`read_coco`), YOLO txt (:func:`read_yolo`) and PASCAL VOC XML
(:func:`read_voc`). :func:`read_boxes` picks by format; bad rows are named and counted
(:class:`mlsd.data.sources.BadRows`).

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

import json
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml
from PIL import Image, ImageOps

from mlsd.data.sources import BadRows, DataError, list_files, read_text_capped

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
            Example(
                path, boxes, np.full(len(boxes), PLATE, np.int64), w, h, "openalpr", {"text": text}
            )
        )
    return sorted(out, key=lambda e: e.path.name)


def read_dlib(xml: str | Path) -> list[Example]:
    """dlib imglab XML: ``<image file=...><box top= left= width= height=/>``."""
    xml = Path(xml)
    root = ET.parse(xml).getroot()
    out = []
    for img in root.iter("image"):
        path = xml.parent / img.get("file")

        with Image.open(path) as im:
            w, h = im.size
        boxes = [
            [
                float(b.get("left")),
                float(b.get("top")),
                float(b.get("left")) + float(b.get("width")),
                float(b.get("top")) + float(b.get("height")),
            ]
            for b in img.iter("box")
            if b.get("ignore") != "1"
        ]
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


# --- a user's own boxes: COCO JSON, YOLO txt, VOC XML, mapped to face / plate --------------

BOX_FORMATS = ("coco", "yolo", "voc")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
MAX_ANNOTATION_BYTES = 2 << 30  # a COCO file larger than 2 GiB: split it


def parse_class_map(text: str) -> dict[str, int]:
    """``"face=face,person-face=face,license_plate=plate,0=face"`` -> {class: FACE | PLATE}.
    Keys are the data's class names (or YOLO class indices); values ``face`` or ``plate``."""
    out = {}
    for part in (p.strip() for p in text.split(",") if p.strip()):
        key, sep, value = part.rpartition("=")
        if not sep or not key.strip():
            raise DataError(f"class map entry {part!r}: expected CLASS=face or CLASS=plate")
        target = {"face": FACE, "plate": PLATE}.get(value.strip().lower())
        if target is None:
            raise DataError(f"class map entry {part!r}: the target must be face or plate")
        out[key.strip()] = target
    if not out:
        raise DataError("the class map is empty: name which classes are faces and plates")
    return out


def _image_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as im:
        return im.size


def _box_ok(box, w: int, h: int) -> str:
    """'' when ``x1 y1 x2 y2`` is a real box inside a w x h image, else why not."""
    x1, y1, x2, y2 = box
    if not all(np.isfinite(box)):
        return "not a number"
    if x2 - x1 < 1 or y2 - y1 < 1:
        return f"empty box {[round(v, 1) for v in box]}"
    if x2 <= 0 or y2 <= 0 or x1 >= w or y1 >= h:
        return f"box {[round(v, 1) for v in box]} outside the {w}x{h} image"
    return ""


def _example(path, boxes, labels, w, h, source) -> Example:
    b = np.asarray(boxes, np.float32).reshape(-1, 4)
    lab = np.asarray(labels, np.int64)
    keep = (b[:, 2] - b[:, 0] >= 1) & (b[:, 3] - b[:, 1] >= 1)
    return Example(Path(path), _clip(b[keep], w, h), lab[keep], w, h, source)


def read_coco(
    json_path: str | Path, class_map: dict[str, int], images: str | Path | None = None
) -> tuple[list[Example], BadRows]:
    """COCO detection JSON: ``images`` (id, file_name, width, height), ``annotations``
    (image_id, category_id, bbox = [x, y, w, h] in pixels, iscrowd) and ``categories``
    (id, name); the photos under ``images`` (default: the JSON's folder). Images with no
    mapped box are kept as negatives."""
    json_path = Path(json_path)
    folder = Path(images) if images else json_path.parent
    try:
        size = json_path.stat().st_size
        if size > MAX_ANNOTATION_BYTES:
            raise DataError(f"{json_path}: {size} bytes, over {MAX_ANNOTATION_BYTES}: split it")
        doc = json.loads(json_path.read_bytes())
    except FileNotFoundError as e:
        raise DataError(f"{json_path}: no such file") from e
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{json_path}: not JSON: {e}") from e
    if not isinstance(doc, dict):
        raise DataError(f"{json_path}: expected an object with images, annotations, categories")
    for key in ("images", "annotations", "categories"):
        if not isinstance(doc.get(key), list):
            raise DataError(f"{json_path}: no list {key!r} (a COCO detection file has three)")
    cats = {c.get("id"): str(c.get("name")) for c in doc["categories"] if isinstance(c, dict)}
    bad = BadRows()
    imgs: dict = {}
    for i, im in enumerate(doc["images"]):
        bad.total += 1
        where = f"{json_path}, images[{i}]"
        if not isinstance(im, dict) or "id" not in im or not im.get("file_name"):
            bad.add("needs id and file_name", where)
            continue
        if im["id"] in imgs:
            bad.add(f"duplicate image id {im['id']!r}", f"{where}, column 'id'")
            continue
        path = folder / str(im["file_name"])
        if not path.is_file():
            bad.add(f"no such image file {str(path)[:200]!r}", f"{where}, column 'file_name'")
            continue
        try:
            w, h = _image_size(path)
        except Exception as e:  # noqa: BLE001 - any unreadable image is one bad row
            bad.add(f"unreadable image: {e}", f"{where}, column 'file_name'")
            continue
        imgs[im["id"]] = [path, w, h, [], []]
    for i, a in enumerate(doc["annotations"]):
        bad.total += 1
        where = f"{json_path}, annotations[{i}]"
        if not isinstance(a, dict):
            bad.add("not an object", where)
            continue
        if a.get("image_id") not in imgs:
            bad.add(f"unknown image_id {a.get('image_id')!r}", f"{where}, column 'image_id'")
            continue
        if a.get("category_id") not in cats:
            bad.add(
                f"unknown category_id {a.get('category_id')!r}", f"{where}, column 'category_id'"
            )
            continue
        target = class_map.get(cats[a["category_id"]])
        if target is None or a.get("iscrowd"):
            why = "a crowd box" if target is not None else f"class {cats[a['category_id']]!r}"
            bad.left_out[f"{why} (not in the class map)"] += 1
            continue
        bbox = a.get("bbox")
        try:
            x, y, bw, bh = (float(v) for v in bbox)
        except (TypeError, ValueError):
            bad.add(f"bbox {str(bbox)[:80]} is not [x, y, w, h]", f"{where}, column 'bbox'")
            continue
        entry = imgs[a["image_id"]]
        box = [x, y, x + bw, y + bh]
        if why := _box_ok(box, entry[1], entry[2]):
            bad.add(why, f"{where}, column 'bbox'")
            continue
        entry[3].append(box)
        entry[4].append(target)
    examples = [_example(p, b, lab, w, h, "coco") for p, w, h, b, lab in imgs.values()]
    return examples, bad


def read_yolo(
    folder: str | Path, class_map: dict[str, int], names: list[str] | None = None
) -> tuple[list[Example], BadRows]:
    """YOLO txt: every photo under ``folder`` with a ``.txt`` of the same stem (beside it, or
    ``labels/`` for ``images/``); one ``class cx cy w h`` line per box, normalised to [0, 1].
    Classes are indices; ``names`` (from ``classes.txt`` / ``data.yaml`` if there is one) lets
    the class map use names. A photo without a txt is a negative."""
    folder = Path(folder)
    names = names if names is not None else _yolo_names(folder)
    bad = BadRows()
    out = []
    for img_path in map(Path, list_files(str(folder), IMAGE_EXTENSIONS)):
        parts = list(img_path.parts)
        txt = img_path.with_suffix(".txt")
        if "images" in parts and not txt.exists():
            parts[len(parts) - 1 - parts[::-1].index("images")] = "labels"
            txt = Path(*parts).with_suffix(".txt")
        try:
            w, h = _image_size(img_path)
        except Exception as e:  # noqa: BLE001 - any unreadable image is one bad row
            bad.total += 1
            bad.add(f"unreadable image: {e}", str(img_path))
            continue
        boxes, labels = [], []
        lines = read_text_capped(str(txt)) if txt.exists() else []
        for n, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            bad.total += 1
            where = f"{txt}, row {n}"
            fields = line.split()
            if len(fields) != 5:
                bad.add(f"{len(fields)} fields, expected 'class cx cy w h'", where)
                continue
            try:
                cls = int(fields[0])
                cx, cy, bw, bh = (float(v) for v in fields[1:])
            except ValueError:
                bad.add(f"not numbers: {line[:80]!r}", where)
                continue
            if not all(0 <= v <= 1 for v in (cx, cy, bw, bh)):
                bad.add("coordinates outside [0, 1] (YOLO's are normalised)", where)
                continue
            key = names[cls] if names and 0 <= cls < len(names) else str(cls)
            target = class_map.get(key, class_map.get(str(cls)))
            if target is None:
                bad.left_out[f"class {key!r} (not in the class map)"] += 1
                continue
            box = [(cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h]
            if why := _box_ok(box, w, h):
                bad.add(why, f"{where}, column 'w'/'h'")
                continue
            boxes.append(box)
            labels.append(target)
        out.append(_example(img_path, boxes, labels, w, h, "yolo"))
    return out, bad


def _yolo_names(folder: Path) -> list[str] | None:
    for candidate in (folder / "classes.txt", folder.parent / "classes.txt"):
        if candidate.is_file():
            return [ln.strip() for ln in read_text_capped(str(candidate)) if ln.strip()]
    for candidate in (folder / "data.yaml", folder.parent / "data.yaml"):
        if candidate.is_file():
            names = (yaml.safe_load(candidate.read_text()) or {}).get("names")
            if isinstance(names, dict):
                return [str(names[k]) for k in sorted(names)]
            if isinstance(names, list):
                return [str(v) for v in names]
    return None


VOC_BOX = ("xmin", "ymin", "xmax", "ymax")


def read_voc(folder: str | Path, class_map: dict[str, int]) -> tuple[list[Example], BadRows]:
    """PASCAL VOC XML: ``annotations/*.xml`` (or XML beside the photos) naming each photo's
    ``filename`` (under ``images/`` or the XML's folder) and ``object``s with ``name`` and
    ``bndbox``; ``name`` goes through the class map."""
    folder = Path(folder)
    ann = folder / "annotations" if (folder / "annotations").is_dir() else folder
    xmls = sorted(ann.glob("*.xml"), key=_numeric_key)
    if not xmls:
        raise DataError(f"{folder}: no VOC .xml files (in it or in annotations/)")
    bad = BadRows()
    out = []
    for xml in xmls:
        bad.total += 1
        try:
            root = ET.parse(xml).getroot()
            name = root.findtext("filename") or ""
            candidates = [folder / "images" / name, xml.parent / name]
            path = next((c for c in candidates if name and c.is_file()), None)
            if path is None and name:  # converted copies: the XML says .png, the file is .jpg
                alt = sorted((folder / "images").glob(Path(name).stem + ".*"))
                path = alt[0] if alt else None
            if path is None:
                bad.add(f"no such image file {name[:200]!r}", f"{xml}, column 'filename'")
                continue
            w, h = _image_size(path)
            boxes, labels = [], []
            for k, o in enumerate(root.iter("object")):
                label = (o.findtext("name") or "").strip()
                target = class_map.get(label)
                if target is None:
                    bad.left_out[f"class {label!r} (not in the class map)"] += 1
                    continue
                try:
                    box = [float(o.findtext(f"bndbox/{c}")) for c in VOC_BOX]
                except (TypeError, ValueError):
                    bad.add("bndbox is not four numbers", f"{xml}, object {k}, column 'bndbox'")
                    continue
                if why := _box_ok(box, w, h):
                    bad.add(why, f"{xml}, object {k}, column 'bndbox'")
                    continue
                boxes.append(box)
                labels.append(target)
        except ET.ParseError as e:
            bad.add(f"not XML: {e}", str(xml))
            continue
        except OSError as e:
            bad.add(f"unreadable image: {e}", f"{xml}, column 'filename'")
            continue
        out.append(_example(path, boxes, labels, w, h, "voc"))
    return out, bad


def read_boxes(
    fmt: str, path: str | Path, class_map: dict[str, int], images: str | Path | None = None
) -> tuple[list[Example], BadRows]:
    """A user's labelled boxes in ``fmt`` (coco: the JSON file; yolo / voc: the folder)."""
    if fmt == "coco":
        return read_coco(path, class_map, images)
    if fmt == "yolo":
        return read_yolo(path, class_map)
    if fmt == "voc":
        return read_voc(path, class_map)
    raise DataError(f"box format {fmt!r}: one of {', '.join(BOX_FORMATS)}")


def load_rgb(path: str | Path) -> np.ndarray:
    """(H, W, 3) uint8, EXIF orientation applied (boxes of these sets are for stored pixels,
    and none of them carry an orientation tag; checked in a test)."""

    with Image.open(path) as im:
        return np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
