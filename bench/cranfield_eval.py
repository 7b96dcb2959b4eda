"""The text branch's quality on Cranfield (documents stand in for video descriptions):
BM25 (tantivy, default and en_stem analysers), dense retrieval (all-MiniLM-L6-v2, exact
cosine), and their fusion (weighted RRF; min-max weighted sum). ANCHORS.md protocol.

    python -m bench.cranfield_eval [--data ../shared/data/cranfield]
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

from mlsd.data.cranfield import load_cranfield
from mlsd.fusion import FusionConfig, fuse
from mlsd.index import VectorIndex
from mlsd.metrics import ndcg_at_k
from mlsd.text_search import TextIndex


def metrics(runs: list[np.ndarray], qrels: list[dict[int, int]]) -> dict[str, float]:
    """runs: per query, doc ids best first (>= 100 deep when available)."""
    rel10 = np.zeros((len(runs), 10))
    ideal = np.zeros((len(runs), 10))
    rr, rec = [], []
    for q, (ids, gains) in enumerate(zip(runs, qrels, strict=True)):
        g = [gains.get(int(i), 0) for i in ids[:10]]
        rel10[q, : len(g)] = g
        top = sorted(gains.values(), reverse=True)[:10]
        ideal[q, : len(top)] = top
        first = next((r for r, x in enumerate(g, 1) if x > 0), None)
        rr.append(1.0 / first if first else 0.0)
        found = sum(1 for i in ids[:100] if int(i) in gains)
        rec.append(found / len(gains) if gains else 0.0)
    return {
        "nDCG@10": float(ndcg_at_k(rel10, ideal=ideal, k=10)),
        "MRR@10": float(np.mean(rr)),
        "R@100": float(np.mean(rec)),
    }


def bm25_runs(cran, tokenizer: str) -> list[tuple[np.ndarray, np.ndarray]]:
    idx = TextIndex(["text"], tokenizer=tokenizer)
    for i, t, b in zip(cran.doc_ids, cran.titles, cran.bodies, strict=True):
        idx.add(i, text=f"{t}\n{b}")
    idx.commit()
    return [idx.search(q, 100) for q in cran.queries]


def dense_runs(cran, text_model: str) -> list[tuple[np.ndarray, np.ndarray]]:
    from mlsd.text import SentenceEncoder

    enc = SentenceEncoder(text_model)
    docs = enc.encode([f"{t}\n{b}" for t, b in zip(cran.titles, cran.bodies, strict=True)])
    index = VectorIndex.build(docs, np.array(cran.doc_ids))
    scores, ids = index.search(enc.encode(cran.queries), 100)
    return list(zip(ids, scores, strict=True))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--data", default=None)
    p.add_argument("--text-model", default="offline:all-MiniLM-L6-v2")
    p.add_argument("--out", default="var/bench/cranfield_eval.json")
    a = p.parse_args(argv)
    cran = load_cranfield(a.data)
    runs = {
        "BM25 (tantivy default analyser)": bm25_runs(cran, "default"),
        "BM25 (en_stem)": bm25_runs(cran, "en_stem"),
        "dense all-MiniLM-L6-v2, exact cosine": dense_runs(cran, a.text_model),
    }
    bm25, dense = runs["BM25 (en_stem)"], runs["dense all-MiniLM-L6-v2, exact cosine"]
    for name, cfg in [
        ("RRF k=60 (en_stem + dense)", FusionConfig("rrf")),
        ("min-max weighted sum, w=0.5 (en_stem + dense)", FusionConfig("weighted_sum")),
    ]:
        fused = []
        for b, d in zip(bm25, dense, strict=True):
            f = fuse({"text": b, "dense": d}, cfg)[:100]
            fused.append((np.array([x.doc_id for x in f]), np.array([x.score for x in f])))
        runs[name] = fused
    rows = {name: metrics([ids for ids, _ in r], cran.qrels) for name, r in runs.items()}
    print("| system | nDCG@10 | MRR@10 | R@100 |\n| --- | --- | --- | --- |")
    for name, m in rows.items():
        print(f"| {name} | {m['nDCG@10']:.3f} | {m['MRR@10']:.3f} | {m['R@100']:.3f} |")
    Path(os.path.dirname(a.out) or ".").mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
