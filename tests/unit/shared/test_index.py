import faiss
import numpy as np
import pytest

from mlsd.index import IndexConfig, VectorIndex, recall_at_k_ids


def _data(n=3000, d=32, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(30, d))
    x = centres[rng.integers(0, 30, n)] + 0.3 * rng.normal(size=(n, d))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32)


def test_flat_is_exact_and_keeps_ids():
    x = _data()
    ids = np.arange(len(x)) * 7 + 100
    idx = VectorIndex.build(x, ids, IndexConfig(kind="flat"))
    scores, got = idx.search(x[:5], 3)
    assert list(got[:, 0]) == list(ids[:5])
    np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-5)


def test_auto_switches_to_ann_above_threshold_by_mode():
    x = _data(n=2000)
    assert VectorIndex.build(x, cfg=IndexConfig(auto_threshold=5000)).kind == "flat"
    assert VectorIndex.build(x, cfg=IndexConfig(auto_threshold=1000)).kind == "hnsw"
    memory = IndexConfig(auto_threshold=1000, mode="memory")
    assert VectorIndex.build(x, cfg=memory).kind == "ivfsq"


@pytest.mark.parametrize("kind", ["ivf", "ivfsq", "hnsw"])
def test_ann_recall_and_additions(kind, tmp_path):
    both = _data(n=4200)
    x, q = both[:4000], both[4000:]  # queries: unseen draws from the same mixture
    ids = np.arange(len(x)) + 10
    idx = VectorIndex.build(x, ids, IndexConfig(kind=kind, target_recall=0.95))
    exact = VectorIndex.build(x, ids, IndexConfig(kind="flat"))
    _, truth = exact.search(q, 10)
    _, got = idx.search(q, 10)
    assert recall_at_k_ids(got, truth) >= 0.9
    new = _data(n=4205, seed=0)[-5:]  # new draws from the same mixture
    idx.add(new, np.arange(5) + 10_000)
    _, top = idx.search(new, 1)
    assert list(top[:, 0]) == list(np.arange(5) + 10_000)
    idx.save(tmp_path / "i.faiss")
    back = VectorIndex.load(tmp_path / "i.faiss")
    assert back.kind == kind and len(back) == len(x) + 5


@pytest.mark.parametrize(
    "kind,knob", [("ivf", "nprobe"), ("ivfsq", "nprobe"), ("hnsw", "ef_search")]
)
def test_the_tuned_knob_reaches_the_target_on_unseen_queries(kind, knob):
    both = np.random.default_rng(3).normal(size=(6300, 24)).astype(np.float32)  # little structure:
    both /= np.linalg.norm(both, axis=1, keepdims=True)  # ANN has to search to find neighbours
    x, q = both[:6000], both[6000:]
    _, truth = VectorIndex.build(x, cfg=IndexConfig(kind="flat")).search(q, 10)
    low = VectorIndex.build(x, cfg=IndexConfig(kind=kind, target_recall=0.6, hnsw_m=8))
    high = VectorIndex.build(x, cfg=IndexConfig(kind=kind, target_recall=0.95, hnsw_m=8))
    assert getattr(high, knob) > getattr(low, knob)  # a higher target searches more
    assert recall_at_k_ids(high.search(q, 10)[1], truth) >= 0.93
    assert recall_at_k_ids(low.search(q, 10)[1], truth) < 0.93  # the knob is what decides


def test_memory_mode_keeps_a_third_of_flat_bytes_and_its_recall():
    both = _data(n=8300, d=128, seed=4)
    x, q = both[:8000], both[8000:]
    flat = VectorIndex.build(x, cfg=IndexConfig(kind="flat"))
    small = VectorIndex.build(x, cfg=IndexConfig(kind="auto", auto_threshold=1, mode="memory"))
    ratio = faiss.serialize_index(small.index).nbytes / faiss.serialize_index(flat.index).nbytes
    assert small.kind == "ivfsq" and ratio <= 0.35
    assert recall_at_k_ids(small.search(q, 10)[1], flat.search(q, 10)[1]) >= 0.95
    assert small.removes and small.remove(np.arange(10)) == 10  # deletions still drop vectors


def test_empty_and_bad_queries():
    x = _data(n=10)
    idx = VectorIndex.build(x[:0].reshape(0, 32), cfg=IndexConfig(kind="flat"))
    s, i = idx.search(x[:2], 3)
    assert (i == -1).all()
    full = VectorIndex.build(x, cfg=IndexConfig(kind="flat"))
    with pytest.raises(ValueError):
        full.search(x[:, :5], 3)
    with pytest.raises(ValueError):
        full.search(x, 0)
    s, i = full.search(x[:1], 50)  # more than there are: missing slots are -1
    assert (i[0, 10:] == -1).all()


def test_bad_config():
    with pytest.raises(ValueError, match="kind"):
        IndexConfig(kind="lsh-of-my-dreams")
    with pytest.raises(ValueError, match="mode"):
        IndexConfig(mode="fast")
    with pytest.raises(ValueError, match="target_recall"):
        IndexConfig(target_recall=1.5)
