"""A user's own labelled boxes: COCO JSON, YOLO txt and VOC XML read into the one box format,
mapped to face / plate by a class map, and each reader's bad-input table."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from mlsd.blurring.data import FACE, PLATE, parse_class_map, read_boxes, read_coco, read_yolo
from mlsd.data.sources import DataError
from tests.conftest import real_photos
from train.blurring import parse_args, training_examples

MAP = {"face": FACE, "license_plate": PLATE}
# per photo: (class, x1, y1, x2, y2) in pixels; the "dog" class is not in the class map
BOXES = {
    "a.jpg": [("face", 10, 20, 60, 90), ("license_plate", 100, 200, 180, 230)],
    "b.jpg": [("face", 200, 100, 260, 180), ("dog", 0, 0, 50, 50)],
    "c.jpg": [],  # a negative: no box
}


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    root = tmp_path_factory.mktemp("boxes")
    (root / "images").mkdir()
    for name, img in zip(BOXES, real_photos(), strict=False):
        Image.fromarray(img[:300, :400]).save(root / "images" / name)  # 400 x 300
    return root


def coco(root, extra_annotations=(), extra_images=()):
    cats = [{"id": 1, "name": "face"}, {"id": 2, "name": "license_plate"}, {"id": 3, "name": "dog"}]
    ids = {"face": 1, "license_plate": 2, "dog": 3}
    images = [
        {"id": i, "file_name": n, "width": 400, "height": 300} for i, n in enumerate(BOXES)
    ] + list(extra_images)
    anns = [
        {
            "id": 100 * i + j,
            "image_id": i,
            "category_id": ids[c],
            "bbox": [x1, y1, x2 - x1, y2 - y1],
        }
        for i, boxes in enumerate(BOXES.values())
        for j, (c, x1, y1, x2, y2) in enumerate(boxes)
    ] + list(extra_annotations)
    path = root / "instances.json"
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return path


def yolo(root, extra_lines=""):
    names = ["face", "license_plate", "dog"]
    (root / "labels").mkdir(exist_ok=True)
    (root / "classes.txt").write_text("\n".join(names))
    for name, boxes in BOXES.items():
        lines = [
            f"{names.index(c)} {(x1 + x2) / 800} {(y1 + y2) / 600} "
            f"{(x2 - x1) / 400} {(y2 - y1) / 300}"
            for c, x1, y1, x2, y2 in boxes
        ]
        (root / "labels" / name.replace(".jpg", ".txt")).write_text("\n".join(lines) + extra_lines)
    return root


def voc(root):
    (root / "annotations").mkdir(exist_ok=True)
    for name, boxes in BOXES.items():
        objs = "".join(
            f"<object><name>{c}</name><bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin>"
            f"<xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>"
            for c, x1, y1, x2, y2 in boxes
        )
        xml = f"<annotation><filename>{name}</filename>{objs}</annotation>"
        (root / "annotations" / name.replace(".jpg", ".xml")).write_text(xml)
    return root


def by_name(examples):
    return {e.path.name: (e.boxes.round(2).tolist(), e.labels.tolist()) for e in examples}


def test_the_three_formats_give_the_same_boxes(photos):
    expected = {
        "a.jpg": ([[10, 20, 60, 90], [100, 200, 180, 230]], [FACE, PLATE]),
        "b.jpg": ([[200, 100, 260, 180]], [FACE]),
        "c.jpg": ([], []),
    }
    for fmt, path in (("coco", coco(photos)), ("yolo", yolo(photos)), ("voc", voc(photos))):
        examples, bad = read_boxes(fmt, path, MAP, photos / "images")
        assert by_name(examples) == expected, fmt
        assert bad.count == 0, (fmt, bad.examples)
        assert bad.left_out == {"class 'dog' (not in the class map)": 1}, fmt
        assert all((e.width, e.height) == (400, 300) for e in examples)


def test_class_maps_name_face_or_plate():
    assert parse_class_map("face=face, lp = plate,0=face") == {"face": FACE, "lp": PLATE, "0": FACE}
    for text, match in (("face", "expected CLASS=face"), ("x=car", "face or plate"), ("", "empty")):
        with pytest.raises(DataError, match=match):
            parse_class_map(text)


def test_bad_coco_rows_are_named_and_counted(photos):
    path = coco(
        photos,
        extra_annotations=[
            {"image_id": 99, "category_id": 1, "bbox": [0, 0, 5, 5]},
            {"image_id": 0, "category_id": 7, "bbox": [0, 0, 5, 5]},
            {"image_id": 0, "category_id": 1, "bbox": [1, 2, 3]},
            {"image_id": 0, "category_id": 1, "bbox": [500, 500, 10, 10]},
        ],
        extra_images=[{"id": 50, "file_name": "missing.jpg"}, {"id": 0, "file_name": "a.jpg"}],
    )
    examples, bad = read_coco(path, MAP, photos / "images")
    assert len(examples) == 3 and bad.count == 6
    text = " | ".join(bad.examples)
    assert "annotations[4], column 'image_id': unknown image_id 99" in text
    assert "annotations[5], column 'category_id': unknown category_id 7" in text
    assert "annotations[6], column 'bbox': bbox [1, 2, 3] is not [x, y, w, h]" in text
    assert "annotations[7], column 'bbox'" in text and "outside the 400x300 image" in text
    assert "images[3], column 'file_name': no such image file" in text
    assert "images[4], column 'id': duplicate image id 0" in text


@pytest.mark.parametrize(
    "text, match",
    [
        ("", "not JSON"),
        ("[1, 2]", "expected an object"),
        ('{"images": []}', "no list 'annotations'"),
    ],
)
def test_a_broken_coco_file_is_refused(tmp_path, text, match):
    path = tmp_path / "x.json"
    path.write_text(text)
    with pytest.raises(DataError, match=match):
        read_coco(path, MAP)
    with pytest.raises(DataError, match="no such file"):
        read_coco(tmp_path / "nope.json", MAP)


def test_bad_yolo_rows_are_named_and_counted(photos):
    yolo(photos, extra_lines="\n0 0.5 0.5\n1 x 0.5 0.1 0.1\n0 1.5 0.5 0.1 0.1\n")
    examples, bad = read_yolo(photos / "images", MAP)
    a = next(e for e in examples if e.path.name == "a.jpg")
    assert len(a.boxes) == 2  # the good rows still count
    assert bad.count == 9  # three bad lines in each of the three label files
    text = " | ".join(bad.examples)
    assert "a.txt, row 3: 3 fields, expected 'class cx cy w h'" in text
    assert "row 4: not numbers" in text and "row 5: coordinates outside [0, 1]" in text


def test_a_mostly_bad_box_file_fails_the_job_before_training(photos, tmp_path):

    bad_anns = [{"image_id": 42, "category_id": 1, "bbox": [0, 0, 1, 1]}] * 20
    path = coco(photos, extra_annotations=bad_anns)
    a = parse_args(
        [
            "--boxes",
            str(path),
            "--boxes-images",
            str(photos / "images"),
            "--class-map",
            "face=face,license_plate=plate",
        ]
    )
    with pytest.raises(DataError, match="20 of 27 rows are bad"):
        training_examples(a)
    good = coco(photos)
    faces, plates, validation, source = training_examples(
        parse_args(["--boxes", str(good), "--boxes-images", str(photos / "images")])
    )
    assert [e.path.name for e in plates] == ["a.jpg"]  # license_plate is in the default map
    assert sorted(e.path.name for e in faces) == ["b.jpg", "c.jpg"]
    assert source["boxes_by_class"] == {"face": 2, "plate": 1}
    assert validation == []  # 3 photos: too few to hold any out (thresholds stay as given)
    assert np.isclose(plates[0].boxes[1], [100, 200, 180, 230]).all()
