"""The pure pipeline on the tiny real artifact: backends agree, bad artifacts are named."""

import shutil

import numpy as np
import pytest

from mlsd.artifacts import ArtifactError, ArtifactStore
from mlsd.image import InvalidImage
from mlsd.state import init_store
from mlsd.visual_search.pipeline import CatalogueIndex, ImageEncoderModel, search_pipeline
from tests.conftest import catalogue_images, png_bytes


def test_backends_agree_with_torch(tiny_store):
    art = ArtifactStore(tiny_store).load("visual_search")
    imgs, _ = catalogue_images(64)
    x = np.stack([ImageEncoderModel(art).preprocess(png_bytes(i))[0] for i in imgs])
    ref = ImageEncoderModel(art, "torch").encode(x)
    fp32 = ImageEncoderModel(art, "onnx").encode(x)
    int8 = ImageEncoderModel(art, "onnx-int8").encode(x)
    assert np.abs(fp32 - ref).max() < 1e-4  # export parity
    assert (int8 * ref).sum(1).mean() > 0.95  # compressed model stays close (cosine)
    m = art.manifest["metrics"]
    assert m["onnx_max_abs_diff"] < 1e-4 and m["onnx_int8_mean_cosine"] > 0.95
    assert (tiny_store / "visual_search" / art.version / "encoder.int8.onnx").stat().st_size < (
        tiny_store / "visual_search" / art.version / "encoder.onnx"
    ).stat().st_size


def test_pipeline_in_process(tiny_store, tmp_path, objects):
    art = ArtifactStore(tiny_store).load("visual_search")
    enc = ImageEncoderModel(art)
    cat = CatalogueIndex(art, init_store(tmp_path / "live.sqlite"), objects)
    imgs, _ = catalogue_images(400)
    hits = search_pipeline(enc, cat, png_bytes(imgs[3]), k=5)
    assert hits[0].image_id == 3 and len(hits) == 5
    with pytest.raises(InvalidImage):
        search_pipeline(enc, cat, b"nope", k=5)


def test_corrupt_or_missing_artifact_files_are_named(tiny_store, tmp_path):
    root = tmp_path / "store"
    shutil.copytree(tiny_store, root)
    store = ArtifactStore(root)
    art = store.load("visual_search")
    (art.path / "index.faiss").write_bytes(b"garbage")
    with pytest.raises(ArtifactError, match="index.faiss is corrupt"):
        store.load("visual_search")
    unverified = store.load("visual_search", verify=False)
    with pytest.raises(ArtifactError, match="cannot read index .*index.faiss"):
        CatalogueIndex(unverified)
    (art.path / "encoder.pt").write_bytes(b"garbage")
    with pytest.raises(ArtifactError, match="encoder.pt"):
        ImageEncoderModel(store.load("visual_search", verify=False))
    (art.path / "encoder.onnx").unlink()
    with pytest.raises(ArtifactError, match="missing file .*encoder.onnx"):
        store.load("visual_search")
