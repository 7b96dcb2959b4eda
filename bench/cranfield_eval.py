"""The text branch's quality on Cranfield (documents stand in for video descriptions):
BM25 (tantivy: default and en_stem analysers, and the served one, english = stop words +
en_stem), dense retrieval (all-MiniLM-L6-v2, exact cosine), and their fusion (weighted RRF;
min-max weighted sum; the fusion serve_config.yaml serves, with the text branch's coverage as
its strength and the dense run in the visual branch's place). ANCHORS.md protocol.

    python -m bench.cranfield_eval [--data ../shared/data/cranfield]
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import yaml

from mlsd.data.cranfield import load_cranfield
from mlsd.video_search.evaluation import bm25_runs, cranfield_metrics, dense_runs, fused_runs
from mlsd.video_search.fusion import FusionConfig


def served_fusion(path: str) -> dict:
    """The video search app's fusion args in a serve config file."""
    apps = yaml.safe_load(Path(path).read_text())["applications"]
    return next(x for x in apps if x["name"] == "video_search")["args"].get("fusion", {})


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--data", default=None)
    p.add_argument("--text-model", default="offline:all-MiniLM-L6-v2")
    p.add_argument("--out", default="var/bench/cranfield_eval.json")
    p.add_argument("--serve-config", default="serve_config.yaml")
    a = p.parse_args(argv)
    cran = load_cranfield(a.data)
    runs = {
        "BM25 (tantivy default analyser)": bm25_runs(cran, "default"),
        "BM25 (en_stem)": bm25_runs(cran, "en_stem"),
        "BM25 (english: stop words + en_stem, served)": bm25_runs(cran, "english"),
        "dense all-MiniLM-L6-v2, exact cosine": dense_runs(cran, a.text_model),
    }
    bm25, dense = runs["BM25 (en_stem)"], runs["dense all-MiniLM-L6-v2, exact cosine"]
    for name, cfg in [
        ("RRF k=60 (en_stem + dense)", FusionConfig("rrf")),
        ("min-max weighted sum, w=0.5 (en_stem + dense)", FusionConfig("weighted_sum")),
    ]:
        runs[name] = fused_runs(bm25, dense, cfg)
    served = served_fusion(a.serve_config)
    coverage = bm25_runs(cran, "english", coverage=True)
    runs[f"served fusion {served} (english + dense)"] = fused_runs(
        coverage, dense, FusionConfig(**served), dense_name="visual"
    )
    rows = {name: cranfield_metrics([ids for ids, _ in r], cran.qrels) for name, r in runs.items()}
    print("| system | nDCG@10 | MRR@10 | R@100 |\n| --- | --- | --- | --- |")
    for name, m in rows.items():
        print(f"| {name} | {m['nDCG@10']:.3f} | {m['MRR@10']:.3f} | {m['R@100']:.3f} |")
    Path(os.path.dirname(a.out) or ".").mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
