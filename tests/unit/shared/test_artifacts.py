import json

import pytest

from mlsd.artifacts import ArtifactError, ArtifactStore


def _write(store, name="m", payload=b"weights"):
    w = store.new_version(name)
    w.path("weights.bin").write_bytes(payload)
    (w.dir / "sub").mkdir()
    w.path("sub/meta.txt").write_text("hello")
    return w.commit(config={"lr": 0.1}, data={"set": "x"}, metrics={"p@10": 0.9})


def test_roundtrip_and_latest(tmp_path):
    store = ArtifactStore(tmp_path)
    v1 = _write(store)
    v2 = _write(store, payload=b"other")
    assert store.versions("m") == sorted([v1, v2])
    art = store.load("m")
    assert art.version == v2
    assert art.file("weights.bin").read_bytes() == b"other"
    assert art.manifest["config"] == {"lr": 0.1}
    assert art.manifest["metrics"]["p@10"] == 0.9
    assert "git_commit" in art.manifest
    assert store.load("m", v1).file("weights.bin").read_bytes() == b"weights"


def test_fsspec_uri_memory_filesystem(tmp_path):
    store = ArtifactStore("memory://bucket/artifacts", cache_dir=tmp_path / "cache")
    v = _write(store, name="remote")
    art = store.load("remote", v)
    assert art.file("sub/meta.txt").read_text() == "hello"
    assert str(tmp_path / "cache") in str(art.path)


def test_missing_artifact_names_it(tmp_path):
    with pytest.raises(ArtifactError, match="no artifact 'nope'"):
        ArtifactStore(tmp_path).load("nope")
    store = ArtifactStore(tmp_path)
    _write(store)
    with pytest.raises(ArtifactError, match="v-missing"):
        store.load("m", "v-missing")


def test_corrupt_and_missing_files_are_named(tmp_path):
    store = ArtifactStore(tmp_path)
    v = _write(store)
    art = store.load("m", v)
    art.file("weights.bin").write_bytes(b"tampered")
    with pytest.raises(ArtifactError, match="weights.bin is corrupt"):
        store.load("m", v)
    art.file("weights.bin").unlink()
    with pytest.raises(ArtifactError, match="missing file .*weights.bin"):
        store.load("m", v)


def test_corrupt_manifest(tmp_path):
    store = ArtifactStore(tmp_path)
    v = _write(store)
    (tmp_path / "m" / v / "manifest.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="corrupt manifest"):
        store.load("m", v)
    json.loads((tmp_path / "m" / "LATEST").read_text().join(['"', '"']))


def test_unknown_file_in_artifact(tmp_path):
    store = ArtifactStore(tmp_path)
    art = store.load("m", _write(store))
    with pytest.raises(ArtifactError, match="no file"):
        art.file("nope.bin")
