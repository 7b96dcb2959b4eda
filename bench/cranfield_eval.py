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

from mlsd.data.cranfield import load_cranfield
from mlsd.video_search.evaluation import bm25_runs, cranfield_metrics, dense_runs, fused_runs
from mlsd.video_search.fusion import FusionConfig


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
        runs[name] = fused_runs(bm25, dense, cfg)
    rows = {name: cranfield_metrics([ids for ids, _ in r], cran.qrels) for name, r in runs.items()}
    print("| system | nDCG@10 | MRR@10 | R@100 |\n| --- | --- | --- | --- |")
    for name, m in rows.items():
        print(f"| {name} | {m['nDCG@10']:.3f} | {m['MRR@10']:.3f} | {m['R@100']:.3f} |")
    Path(os.path.dirname(a.out) or ".").mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
