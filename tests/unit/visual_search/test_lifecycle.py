"""Deleting images from the visual-search catalogue: a tombstone in the live log, applied by
every replica before its next answer, after a restart, and by the next indexing job."""

from __future__ import annotations

import os
import threading

import numpy as np
import pyarrow.parquet as pq
import pytest
from sqlalchemy import select

from mlsd.artifacts import ArtifactStore
from mlsd.image import dhash, stored_image
from mlsd.index import IndexConfig, VectorIndex
from mlsd.state import Caller, StoreMissing
from mlsd.state.schema import vs_images
from mlsd.visual_search.catalogue import CatalogueIndex, CatalogueLog
from tests.conftest import build_tiny_artifact, png_bytes

DIM = 32  # the tiny artifact's embedding size
ALICE, ANYONE = Caller("alice"), Caller(None)


def unit(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return v / np.linalg.norm(v)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("vs_store")
    build_tiny_artifact(root, n=200)
    return ArtifactStore(root)


def catalogue(store, log, objects) -> CatalogueIndex:
    return CatalogueIndex(store.load("visual_search"), log, objects)


def add(cat: CatalogueIndex, seed: int, owner="alice", signature=None, image=b"png") -> int:
    return cat.add(unit(seed), f"{cat.version}:torch", owner, False, False, signature, image)


def ids(cat: CatalogueIndex, seed: int, k=5) -> list[int]:
    return [h.image_id for h in cat.retrieve(unit(seed), k, "alice")]


@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw"])
def test_vector_index_remove(kind):
    x = np.stack([unit(i) for i in range(300)])
    index = VectorIndex.build(x, np.arange(300) + 10, IndexConfig(kind=kind, nlist=16, nprobe=16))
    removed = index.remove([10, 11, 999])
    assert removed == (0 if kind == "hnsw" else 2)  # an HNSW graph keeps its nodes
    if kind != "hnsw":
        _, got = index.search(x[:2], 5)
        assert 10 not in got and 11 not in got and len(index) == 298


def test_log_tombstone_erases_the_upload_once(state_url, objects):
    log = CatalogueLog(state_url, objects)
    a = log.append(unit(1), "v1:torch", owner="alice", image=b"bytes-a")
    b = log.append(unit(2), "v1:torch", owner="alice", image=b"bytes-b")
    assert log.delete(a, "alice") is True
    assert log.delete(a, "alice") is False  # twice: nothing more to do
    assert log.image_bytes(a) is None and log.image_bytes(b) == b"bytes-b"
    assert [r.meta.image_id for _, r in log.since(0)] == [b]
    assert log.deleted_ids() == {a}
    with log.db.read() as c:
        raw = c.execute(
            select(vs_images.c.embedding, vs_images.c.signature, vs_images.c.image_key).where(
                vs_images.c.dim == 0
            )
        ).all()
    assert [tuple(r) for r in raw] == [(b"", None, None)]  # erased, not only hidden
    files = [f for _, _, fs in os.walk(objects) for f in fs]
    assert len(files) == 1  # the deleted upload's bytes are gone from the object store


def test_delete_is_seen_by_every_replica_and_after_a_restart(store, state_url, objects):
    live = state_url
    r1, r2 = catalogue(store, live, objects), catalogue(store, live, objects)  # one log
    new = add(r1, 5)
    assert ids(r2, 5)[0] == new
    assert r1.delete(new, "alice") is True
    assert new not in ids(r2, 5) and new not in ids(r1, 5)  # r2 syncs before it answers
    assert r2.visible(new, ALICE) is None and r2.image(new) is None
    assert r1.delete(new, "alice") is False  # twice
    r1.delete(3, "admin")  # a catalogue image (folded into the artifact)
    restarted = catalogue(store, live, objects)
    assert restarted.visible(3, ANYONE) is None and restarted.visible(4, ANYONE) is not None
    q = restarted.index.index.reconstruct(4)
    assert 3 not in [h.image_id for h in restarted.retrieve(q, 50)]
    assert new not in ids(restarted, 5) and len(restarted) == 199


def test_a_deleted_near_duplicate_representative_gives_way(store, state_url, objects):
    cat = catalogue(store, state_url, objects)
    sig = "0f" * 8
    first = add(cat, 7, signature=sig)
    twin = cat.add(unit(7) * 0.999, f"{cat.version}:torch", "bob", False, False, sig, b"x")
    got = ids(cat, 7)
    assert first in got and twin not in got  # one representative of the two
    cat.delete(first, "alice")
    got = ids(cat, 7)
    assert got[0] == twin and first not in got


def test_concurrent_adds_and_deletes(store, state_url, objects):
    live = state_url
    writers = [catalogue(store, live, objects) for _ in range(3)]
    reader = catalogue(store, live, objects)
    kept, gone, lock = [], [], threading.Lock()
    stop = threading.Event()

    def write(w: int):
        for j in range(15):
            i = add(writers[w], 1000 + w * 100 + j)
            if j % 2:
                assert writers[(w + 1) % 3].delete(i, "alice")  # another replica deletes it
                with lock:
                    gone.append(i)
            else:
                with lock:
                    kept.append(i)

    def read():
        while not stop.is_set():
            reader.sync()

    threads = [threading.Thread(target=write, args=(w,)) for w in range(3)]
    rt = threading.Thread(target=read)
    rt.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    rt.join()
    for cat in (reader, catalogue(store, live, objects)):
        cat.sync()
        assert set(kept) <= set(cat.meta) and not set(gone) & set(cat.meta)
        assert len(cat) == 200 + len(kept)


def test_the_next_index_job_leaves_deleted_images_out(tmp_path, state_url, objects):

    root, live = tmp_path / "store", state_url
    build_tiny_artifact(root, n=120)
    store = ArtifactStore(root)
    serving = catalogue(store, live, objects)
    img = (np.random.default_rng(3).random((28, 28)) * 255).astype(np.uint8)
    up, gone = (add(serving, s, image=png_bytes(img), signature=dhash(img)) for s in (1, 2))
    serving.delete(gone, "alice")
    serving.delete(5, "admin")
    # a restart between the delete and the index job, then the job
    assert gone not in ids(catalogue(store, live, objects), 2)
    build_tiny_artifact(root, n=120, live_log=live, objects=objects)
    art = store.load("visual_search")
    table = pq.read_table(art.file("catalogue.parquet")).to_pydict()
    assert up in table["image_id"] and gone not in table["image_id"]
    assert 5 not in table["image_id"] and len(table["image_id"]) == 120
    assert art.manifest["metrics"]["deleted_left_out"] == 2
    assert not np.load(art.file("images.npy"))[5].any()  # the deleted pixels are blank
    fresh = catalogue(store, live, objects)
    assert fresh.visible(gone, ALICE) is None and fresh.visible(5, ANYONE) is None
    assert isinstance(fresh.image(6), np.ndarray) and fresh.image(6).shape == (28, 28)
    assert fresh.image(up) == png_bytes(img)
    body, mime = stored_image(fresh.image(up), size=16)
    assert mime == "image/png" and body[:4] == b"\x89PNG"


def test_an_index_job_whose_log_cannot_be_read_fails_naming_it(tmp_path):
    """Never an artifact built without the deletions: a missing log fails the job."""
    missing = tmp_path / "live.sqlite"
    with pytest.raises(StoreMissing, match=str(missing)):
        build_tiny_artifact(tmp_path / "store", n=60, live_log=str(missing))
    assert not missing.exists()
