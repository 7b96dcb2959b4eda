"""Visual search on a user's own photos, without Ray: the documented input format, its reader's
bad-input table, and an artifact built from real RGB photos that the serving code answers
from (preprocessing read from the artifact, the stored photo returned by id)."""

from __future__ import annotations

import glob
import io
import os
import tempfile

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from mlsd.artifacts import ArtifactStore
from mlsd.data.sources import BadRows, DataError, list_files, read_text_capped
from mlsd.image import InvalidImage
from mlsd.index import IndexConfig
from mlsd.visual_search.artifact import build_photo_artifact, photo_batch
from mlsd.visual_search.catalogue import CatalogueIndex
from mlsd.visual_search.data import (
    assign_ids,
    decode_photo,
    holdout_split,
    read_labels,
    read_photo_source,
)
from mlsd.visual_search.features import prepare_array
from mlsd.visual_search.model import AdaptedEncoder, EncoderConfig
from mlsd.visual_search.pipeline import ImageEncoderModel, search_pipeline
from tests.conftest import real_photos, write_photo_folder

SIZE = 64  # a small encoder input keeps the backbone cheap here; the job's default is 224


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory):
    return write_photo_folder(tmp_path_factory.mktemp("photos"))


def photo_cfg() -> EncoderConfig:
    return EncoderConfig(
        arch="adapted",
        in_channels=3,
        image_size=SIZE,
        invert="never",
        fit="crop",
        embed_dim=16,
        hidden_dim=32,
    )


# --- the input format and its bad-input table ---------------------------------------------


def test_a_folder_glob_or_list_of_photos_is_read_with_its_labels(photo_dir):
    src = read_photo_source(str(photo_dir))  # labels.csv found beside the photos
    assert len(src) == 12 and "more/p0_2.webp" in src.names
    assert src.labels[src.names.index("more/p0_2.webp")] == "photo0"
    codes, names = src.label_codes()
    assert names == ["photo0", "photo1", "photo2", "photo3"] and (codes >= 0).all()
    assert len(list_files(f"{photo_dir}/*.jpg", (".jpg",))) == 4
    listing = photo_dir / "list.txt"
    listing.write_text(f"{photo_dir}/p0_0.jpg\n{photo_dir}/p1_0.jpg\n")
    assert len(list_files(str(listing), (".jpg",))) == 2
    assert read_photo_source(str(photo_dir), labels=None).label_codes() is None


def test_a_missing_or_empty_source_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="no such file or folder"):
        list_files(str(tmp_path / "nowhere"), (".jpg",))
    (tmp_path / "notes.txt.bak").write_text("x")
    with pytest.raises(DataError, match="no .jpg/.png files"):
        list_files(str(tmp_path), (".jpg", ".png"))


@pytest.mark.parametrize(
    "text, match",
    [
        ("", "empty file"),
        ("file,species\np0_0.jpg,a\n", "no column 'label'"),
        ("name,label\np0_0.jpg,a\n", "no column 'file'"),
    ],
)
def test_a_labels_table_without_its_columns_is_refused(photo_dir, tmp_path, text, match):
    path = tmp_path / "labels.csv"
    path.write_text(text)
    with pytest.raises(DataError, match=match) as e:
        read_labels(str(path), {"p0_0.jpg"})
    assert str(path) in str(e.value)


def test_bad_label_rows_are_named_and_counted(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text("file,label\na.jpg,x\nb.jpg,y,extra\nzzz.jpg,x\na.jpg,z\nc.jpg,\n")
    table, bad = read_labels(str(path), {"a.jpg", "b.jpg", "c.jpg"})
    assert table == {"a.jpg": "x"}  # c.jpg: an empty label is unlabelled, not bad
    assert bad.total == 5 and bad.count == 3
    text = " ".join(bad.examples)
    assert f"{path}, row 3" in text and "3 fields, the header has 2" in text
    assert "row 4, column 'file': unknown file 'zzz.jpg'" in text
    assert "row 5, column 'file': duplicate row for 'a.jpg'" in text


def test_labels_for_other_photos_fail_before_any_photo_is_read(photo_dir, tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text("file,label\n" + "".join(f"other{i}.jpg,x\n" for i in range(10)))
    with pytest.raises(DataError, match="10 of 10 rows are bad"):
        read_photo_source(str(photo_dir), str(path))


def test_a_2gb_line_is_refused_without_reading_it(tmp_path):
    path = tmp_path / "labels.csv"
    with open(path, "wb") as f:  # sparse: 2 GiB on paper, nothing on disk
        f.write(b"file,label\n")
        f.truncate(2 * 1024**3)
    with pytest.raises(DataError, match="line 2 is over 1048576 bytes"):
        read_text_capped(str(path))


def test_an_unreadable_photo_is_a_counted_bad_row(photo_dir):
    cfg = photo_cfg()
    good = (photo_dir / "p0_0.jpg").read_bytes()
    with pytest.raises(InvalidImage):
        decode_photo(b"\xff\xd8 not a jpeg", cfg)
    batch = photo_batch(["ok.jpg", "broken.jpg"], [good, good[:200]], cfg)
    assert batch["image"].shape == (2, 3, SIZE, SIZE)
    assert batch["error"][0] == "" and batch["error"][1].startswith("unreadable image")
    assert batch["stored"][0] == good  # small photos are kept as uploaded


def test_mostly_bad_input_fails_and_a_few_bad_rows_pass():
    bad = BadRows(total=10)
    for i in range(3):
        bad.add("unreadable image", f"f{i}.jpg")
    bad.check("photos")  # 3 of 10: counted, reported, the job goes on
    assert bad.report()["bad_rows"] == 3
    for i in range(3):
        bad.add("unreadable image", f"g{i}.jpg")
    with pytest.raises(DataError, match="6 of 10 rows are bad"):
        bad.check("photos")
    with pytest.raises(DataError, match="no rows"):
        BadRows().check("photos")


def test_holdout_split_is_fixed_by_name_and_near_60_20_20():
    names = [f"{i:05d}.jpg" for i in range(5000)]
    parts = [holdout_split(n) for n in names]
    assert parts == [holdout_split(n) for n in names]
    share = {p: parts.count(p) / len(parts) for p in ("train", "val", "test")}
    assert abs(share["train"] - 0.6) < 0.03 and abs(share["test"] - 0.2) < 0.03


def test_ids_stay_with_their_photo_across_versions():
    first = assign_ids(["a.jpg", "b.jpg", "c.jpg"])
    previous = dict(zip(["a.jpg", "b.jpg", "c.jpg"], first.tolist(), strict=True))
    again = assign_ids(["0.jpg", "b.jpg", "c.jpg"], previous)  # a.jpg gone, 0.jpg new
    assert again.tolist() == [3, 1, 2]


def test_photos_are_cropped_or_padded_and_never_inverted_when_configured():
    white = np.full((40, 80, 3), 250, np.uint8)
    white[:, 30:50] = (200, 20, 20)  # a red stripe in the middle of a white photo
    img = Image.fromarray(white)
    crop, flipped = prepare_array(img, 16, 3, invert="never", fit="crop")
    assert not flipped and crop.shape == (3, 16, 16)
    assert crop[0].mean() > 0.8  # still bright: not inverted
    pad, _ = prepare_array(img, 16, 3, invert="never", fit="pad")
    assert pad[:, :3].std() < 1e-6 and pad[:, :3].mean() > 0.8  # a flat, bright band above
    assert crop[:, 0].std() > 0.1  # the crop's top row is photo (the stripe shows)
    assert crop[1, 8, 8] < 0.3 and crop[1, 8, 0] > 0.9  # the stripe fills the crop's centre


# --- an artifact from real photos, served by the same code --------------------------------


def test_a_photo_artifact_is_served_with_its_own_preprocessing(photo_dir, tmp_path):
    cfg = photo_cfg()
    (photo_dir / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    try:
        src = read_photo_source(str(photo_dir))
        store = ArtifactStore(tmp_path / "store")
        version = build_photo_artifact(
            store, "visual_search", AdaptedEncoder(cfg), cfg, {}, src, IndexConfig(kind="flat")
        )
    finally:
        (photo_dir / "broken.jpg").unlink()
    art = store.load("visual_search", version)
    m = art.manifest["metrics"]
    assert m["input"]["rows"] == 13 and m["input"]["bad_rows"] == 1
    assert "broken.jpg" in m["input"]["bad_examples"][0]
    assert art.config["encoder"]["in_channels"] == 3 and art.config["encoder"]["fit"] == "crop"
    assert m["onnx_vs_torch_max_abs_diff"] < 1e-4
    table = pq.read_table(art.file("catalogue.parquet")).to_pydict()
    assert sorted(table["file"]) == sorted(set(src.names) - {"broken.jpg"})
    assert min(table["label"]) >= 0
    cat = CatalogueIndex(art)
    encoder = ImageEncoderModel(art, backend="onnx")
    assert encoder.preprocess.cfg.image_size == SIZE  # read from the artifact
    for name in ("p2_0.jpg", "more/p3_2.webp"):
        data = (photo_dir / name).read_bytes()
        image_id = table["image_id"][table["file"].index(name)]
        hits = search_pipeline(encoder, cat, data, k=3)
        assert hits[0].image_id == image_id and hits[0].score > 0.99  # itself, first
        assert cat.image(image_id) == data  # the stored photo, as it was


def test_a_mostly_unreadable_folder_writes_nothing(tmp_path, photo_dir):
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "ok.jpg").write_bytes((photo_dir / "p0_0.jpg").read_bytes())
    for i in range(3):
        (folder / f"x{i}.png").write_bytes(b"\x89PNG nothing more")
    cfg = photo_cfg()
    staged = set(glob.glob(f"{tempfile.gettempdir()}/artifact-visual_search-*"))
    store = ArtifactStore(tmp_path / "store")
    with pytest.raises(DataError, match="3 of 4 rows are bad"):
        build_photo_artifact(
            store,
            "visual_search",
            AdaptedEncoder(cfg),
            cfg,
            {},
            read_photo_source(str(folder)),
            IndexConfig(kind="flat"),
        )
    assert store.versions("visual_search") == []
    assert set(glob.glob(f"{tempfile.gettempdir()}/artifact-visual_search-*")) == staged
    assert not os.path.exists(tmp_path / "store" / "visual_search" / "LATEST")


def test_photo_decoding_reads_any_size_within_the_limits(photo_dir):
    big = Image.fromarray(np.tile(real_photos()[1], (6, 6, 1)))  # 2400 x 3600
    buf = io.BytesIO()
    big.save(buf, format="JPEG", quality=90)
    d = decode_photo(buf.getvalue(), photo_cfg())
    assert d.x.shape == (3, SIZE, SIZE) and 0 <= d.x.min() and d.x.max() <= 1
    assert max(Image.open(io.BytesIO(d.stored)).size) == 512  # a large photo is shrunk
