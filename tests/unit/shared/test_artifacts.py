import gzip
import json
import tempfile

import pytest

from apps.visual_search import VisualSearchArgs, build_app
from mlsd import artifacts
from mlsd.artifacts import ArtifactError, ArtifactStore, default_cache_dir
from mlsd.data import fashion_mnist as fm


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


def _tamper_manifest(store, name: str, version: str, files: dict) -> None:
    path = f"{store.root}/{name}/{version}/manifest.json"
    with store.fs.open(path, "r") as f:
        manifest = json.load(f)
    manifest["files"] = files
    with store.fs.open(path, "w") as f:
        json.dump(manifest, f)


@pytest.mark.parametrize(
    "bad", ["../escape.pth", "/tmp/abs.pth", "sub/../../x", "a\\..\\b", "", ".hidden/../x"]
)
def test_a_manifest_cannot_write_or_read_outside_the_cache(tmp_path, bad):
    """A tampered manifest (file names are the attacker's) fails to load, and nothing is
    fetched: no file appears outside (or inside) the cache."""
    cache = tmp_path / "cache"
    store = ArtifactStore(f"memory://evil-{abs(hash(bad))}/artifacts", cache_dir=cache)
    v = _write(store, name="remote")
    if bad:  # the attacker's payload is really there to fetch
        store.fs.pipe_file(f"{store.root}/remote/{v}/{bad.lstrip('/')}", b"import os")
    _tamper_manifest(store, "remote", v, {bad: {"sha256": "0" * 64, "bytes": 9}})
    with pytest.raises(ArtifactError, match="unsafe file name"):
        store.load("remote", v)
    assert not list(tmp_path.rglob("*.pth")) and not (tmp_path / "escape.pth").exists()
    assert not list(cache.rglob("*")) or all(p.is_dir() for p in cache.rglob("*"))


def test_latest_and_versions_cannot_leave_the_artifact_folder(tmp_path):
    store = ArtifactStore(tmp_path)
    _write(store)
    (tmp_path / "m" / "LATEST").write_text("../../etc")
    with pytest.raises(ArtifactError, match="invalid version"):
        store.load("m")
    for version in ("../m", "/abs", "a/b", ".."):
        with pytest.raises(ArtifactError, match="invalid artifact version"):
            store.load("m", version)
    with pytest.raises(ArtifactError, match="invalid artifact name"):
        store.load("../m")


def test_remote_cache_is_private_and_rechecked(tmp_path):
    """The cache of fetched artifacts is the user's own (0700), and a cached file that no
    longer matches its checksum is fetched again, not trusted."""
    cache = tmp_path / "cache"
    store = ArtifactStore("memory://private/artifacts", cache_dir=cache)
    v = _write(store, name="remote")
    art = store.load("remote", v)
    assert (cache.stat().st_mode & 0o777) == 0o700
    art.file("weights.bin").write_bytes(b"planted")
    again = store.load("remote", v)
    assert again.file("weights.bin").read_bytes() == b"weights"


def test_default_cache_is_not_a_shared_temp_folder(monkeypatch, tmp_path):

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "mlsd" / "artifacts"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert not str(default_cache_dir()).startswith(tempfile.gettempdir())


def test_fashion_mnist_files_are_checked_by_content(tmp_path):

    bad = tmp_path / "t10k-labels-idx1-ubyte.gz"
    bad.write_bytes(gzip.compress(b"not the labels"))
    with pytest.raises(ValueError, match="SHA-256"):
        fm.verify(bad, "t10k-labels-idx1-ubyte")
    with pytest.raises(ValueError, match="HTTPS"):
        fm.download(tmp_path, base_url="http://example.com/")
    real = fm.DEBIAN_DIR / "t10k-labels-idx1-ubyte.gz"
    if real.exists():
        fm.verify(real, "t10k-labels-idx1-ubyte")


def test_a_pinned_manifest_digest_catches_tampering_before_anything_loads(tmp_path):
    store = ArtifactStore(tmp_path / "s")
    version = _write(store)
    digest = store.manifest_digest("m", version)
    assert store.load("m").digest == digest
    pinned = ArtifactStore(tmp_path / "s", pins={f"m/{version}": f"sha256:{digest}"})
    assert pinned.load("m").version == version
    mpath = tmp_path / "s" / "m" / version / "manifest.json"
    manifest = json.loads(mpath.read_text())
    (tmp_path / "s" / "m" / version / "weights.bin").write_bytes(b"evil weights")
    manifest["files"]["weights.bin"]["sha256"] = (
        __import__("hashlib").sha256(b"evil weights").hexdigest()
    )
    mpath.write_text(json.dumps(manifest))  # a consistent forgery: checksums match the file
    assert ArtifactStore(tmp_path / "s").load("m").version == version  # checksums alone: fooled
    with pytest.raises(ArtifactError, match=f"manifest .*{version}.* pinned sha256"):
        pinned.load("m")


def test_signed_manifests(tmp_path, monkeypatch):

    priv, pub = artifacts.keygen(tmp_path / "signing.pem")
    assert oct(priv.stat().st_mode & 0o777) == "0o600"
    monkeypatch.setenv("MLSD_ARTIFACT_SIGNING_KEY", str(priv))
    version = _write(ArtifactStore(tmp_path / "s"))  # a job's store signs what it commits
    monkeypatch.delenv("MLSD_ARTIFACT_SIGNING_KEY")
    trusted = ArtifactStore(tmp_path / "s", public_key=str(pub))
    assert trusted.load("m").version == version
    assert ArtifactStore.open(trusted.spec()).load("m").version == version  # a replica's view
    mpath = tmp_path / "s" / "m" / version / "manifest.json"
    mpath.write_bytes(mpath.read_bytes().replace(b'"metrics"', b'"metrics" '))
    with pytest.raises(ArtifactError, match="signature does not verify"):
        trusted.load("m")
    unsigned = _write(ArtifactStore(tmp_path / "s"), name="u")
    with pytest.raises(ArtifactError, match="not signed"):
        trusted.load("u", unsigned)
    other, other_pub = artifacts.keygen(tmp_path / "other.pem")
    assert artifacts.main(["sign", "--store", str(tmp_path / "s"), "--key", str(other), "u"]) == 0
    with pytest.raises(ArtifactError, match="signature does not verify"):
        trusted.load("u")
    assert ArtifactStore(tmp_path / "s", public_key=str(other_pub)).load("u").version == unsigned


def test_an_app_whose_pinned_manifest_differs_fails_at_build_naming_it(tiny_store):

    store = ArtifactStore(tiny_store)
    version = store.resolve("visual_search")
    args = VisualSearchArgs(
        artifact_store=str(tiny_store),
        live_log=None,
        artifact_pins={f"visual_search/{version}": "0" * 64},
    )
    with pytest.raises(ArtifactError, match=f"visual_search/{version}/manifest.json"):
        build_app(args)
