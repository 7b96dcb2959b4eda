import threading

import numpy as np

from mlsd.state import LIVE_ID_BASE
from mlsd.visual_search.catalogue import CatalogueLog
from mlsd.visual_search.rerank import ImageMeta, RerankConfig, rerank


def test_rerank_rules():
    meta = {
        1: ImageMeta(1, "alice", private=True, signature="0" * 16),
        2: ImageMeta(2, "bob", private=False, unsafe=True, signature="f" * 16),
        3: ImageMeta(3, "bob", signature="00ff00ff00ff00ff"),
        4: ImageMeta(4, "carol", signature="00ff00ff00ff00fe"),  # 1 bit from #3
        5: ImageMeta(5, "carol", signature="ffff0000ffff0000"),
    }
    cands = [(1, 0.9), (2, 0.8), (3, 0.7), (4, 0.6), (5, 0.5), (99, 0.4)]
    assert rerank(cands, meta, k=10, user_id="bob") == [(3, 0.7), (5, 0.5)]
    assert rerank(cands, meta, k=10, user_id="alice") == [(1, 0.9), (3, 0.7), (5, 0.5)]
    assert rerank(cands, meta, k=1, user_id="alice") == [(1, 0.9)]
    loose = RerankConfig(drop_unsafe=False, near_duplicate_bits=-1)
    assert [i for i, _ in rerank(cands, meta, 10, None, loose)] == [2, 3, 4, 5]


def test_catalogue_log_concurrent_appends_are_all_kept(state_url, objects):
    path = state_url
    logs = [CatalogueLog(path, objects) for _ in range(3)]  # three "replicas", one store
    ids: list[int] = []
    lock = threading.Lock()

    def worker(i):
        for j in range(20):
            emb = np.full(8, i * 100 + j, np.float32)
            got = logs[i % 3].append(emb, "v1:torch", owner=f"u{i}", image=b"x")
            with lock:
                ids.append(got)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(ids)) == 120 and min(ids) > LIVE_ID_BASE
    rows = CatalogueLog(path, objects).since(0)
    assert len(rows) == 120
    assert sorted(r.meta.image_id for _, r in rows) == sorted(ids)
    assert CatalogueLog(path, objects).image_bytes(ids[0]) == b"x"
    tail = CatalogueLog(path, objects).since(rows[99][0])
    assert len(tail) == 20


def test_a_private_image_without_an_owner_is_shown_to_nobody():
    meta = {1: ImageMeta(1, None, private=True), 2: ImageMeta(2, None)}
    for user in (None, "alice"):
        assert rerank([(1, 0.9), (2, 0.8)], meta, k=10, user_id=user) == [(2, 0.8)]
