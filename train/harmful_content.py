"""Train the multi-task harmful-content classifier on Ray Train.

    python -m train.harmful_content --epochs 6
    python -m train.harmful_content --labels natural      # train on SYNTHETIC user-report labels
    ray job submit --working-dir . -- python -m train.harmful_content --num-workers 2 --use-gpu

Rows: Davidson (hate, offensive) and MLMA en / fr / ar (hostile + its types) training splits,
each head learning only from the rows that carry its label, plus every human review done in
``--reviews`` (the review queue the service fills: reviewers' labels fold into the next
model). Text: a multilingual sentence encoder (``--encoder``) + a TF-IDF-weighted n-gram bag;
early fusion (``--fusion late`` for the baseline). Each epoch is scored on the validation
split (mean AUROC over heads and languages); the best epoch so far is checkpointed, and
re-running with the same ``--run-name`` resumes. The best model is written as an artifact
(weights, its ONNX export, the n-gram idf, config, validation metrics).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from dataclasses import asdict

import numpy as np
import ray.train
import ray.train.torch
import torch

from mlsd.artifacts import ArtifactStore
from mlsd.harmful_content import data as D
from mlsd.harmful_content import features as F
from mlsd.harmful_content import model as M
from mlsd.harmful_content import pipeline as P
from mlsd.harmful_content.artifact import write_classifier
from mlsd.harmful_content.features import drift_reference
from mlsd.harmful_content.policy import ValidationScores, thresholds_from_validation
from mlsd.harmful_content.review import ReviewQueue
from mlsd.harmful_content.synthetic import natural_labels
from mlsd.state import pin_url
from train.common import add_train_args, fit, init_ray, report, resume, task_resources


def _limit(posts: list[D.Post], n: int) -> list[D.Post]:
    """The first ``n`` rows of each data set and language (tests); 0: all."""
    if not n:
        return posts
    seen: dict[tuple, int] = {}
    out = []
    for p in posts:
        k = (p.source, p.lang)
        seen[k] = seen.get(k, 0) + 1
        if seen[k] <= n:
            out.append(p)
    return out


def own_posts(a: argparse.Namespace) -> tuple[list[D.Post], tuple[str, ...], D.BadRows]:
    """``--posts``: the platform's own labelled posts, the documented format (read once per
    process: the heads, both splits and the report all come from it)."""
    return D.read_posts_once(a.posts, a.heads, a.max_bad_fraction)


def heads_of(a: argparse.Namespace) -> tuple[str, ...]:
    """The heads this run trains: the posts file's head columns, or the demo sets'."""
    return own_posts(a)[1] if a.posts else D.HEADS


def split_posts(a: argparse.Namespace, split: str) -> list[D.Post]:
    if a.posts:
        return _limit(D.posts_of(own_posts(a)[0], split), a.limit)
    return _limit(D.all_posts(split, tuple(a.langs), a.data_root), a.limit)


def training_posts(a: argparse.Namespace) -> tuple[list[D.Post], int]:
    """The training rows (natural or human labels) + the done reviews."""
    posts = split_posts(a, "train")
    heads = heads_of(a)
    if a.labels == "natural":  # SYNTHETIC: what user reports would have said of each post
        y, mask = D.label_matrix(posts, heads)
        noisy = natural_labels(y.ravel(), seed=a.seed).reshape(y.shape)
        posts = [  # new rows: the posts read (and cached) stay as the file says
            dataclasses.replace(
                p, labels={h: int(noisy[i, j]) for j, h in enumerate(heads) if mask[i, j]}
            )
            for i, p in enumerate(posts)
        ]
    reviewed = 0
    if a.reviews and a.reviews != "none":  # a queue that cannot be read fails the job
        q = ReviewQueue(a.reviews)
        for r in q.reviewed():
            labels = {h: int(v) for h, v in r["labels"].items() if h in heads}
            if labels and r["post"].get("text"):
                posts.append(
                    D.Post(
                        r["post"]["text"],
                        r["post"].get("lang") or "und",
                        "review",
                        labels,
                        r["review_id"],
                    )
                )
                reviewed += 1
        q.close()
    return posts, reviewed


def _config(
    a: argparse.Namespace, text_dim: int, buckets: int, images: bool = False
) -> M.ClassifierConfig:
    """``images``: the posts carry images, so the model gets the image input (early fusion
    with the text, as serving feeds it)."""
    spec = F.FeatureSpec(
        text_dim=text_dim, ngram_buckets=buckets, image_dim=F.IMAGE_DIM if images else 0
    )
    return M.ClassifierConfig(
        heads=heads_of(a),
        spec=spec,
        fusion=a.fusion,
        hidden=a.hidden,
        dropout=a.dropout,
        ngram_dropout=a.ngram_dropout,
        ngram_mode=a.ngram_mode,
    )


def _prepare(a: argparse.Namespace, threads: int):
    """Encoder, rows, and the n-gram bag fitted on the training texts (no features yet)."""
    encoder = F.TextEncoder(a.encoder, num_threads=threads, case=a.text_case)
    train, reviewed = training_posts(a)
    val = split_posts(a, "val")
    bag = F.NgramBag(max_len=a.max_ngrams).fit([p.text for p in train])
    images = any(p.meta.get("image") for p in train)
    return _config(a, encoder.dim, bag.size, images), encoder, bag, train, val, reviewed


def _optimizer(model: torch.nn.Module, a) -> torch.optim.Optimizer:
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    wide = [p for n, p in named if ".wide." in f".{n}" and not n.endswith("scale")]
    scale = [p for n, p in named if n.endswith("wide.scale")]  # stacked: trust in the LR
    rest = [p for n, p in named if ".wide." not in f".{n}"]
    return torch.optim.AdamW(
        [
            {"params": rest, "weight_decay": a["weight_decay"]},
            {"params": wide, "weight_decay": a["wide_weight_decay"], "lr": a["wide_lr"]},
            {"params": scale, "weight_decay": 0.0},
        ],
        lr=a["lr"],
    )


def _langs(posts: list[D.Post]) -> tuple[str, ...]:
    return tuple(sorted({p.lang for p in posts}))


def _val_score(scores: dict) -> float:
    return float(np.nanmean([r["auroc"] for r in scores.values()])) if scores else float("nan")


def train_loop_per_worker(config: dict) -> None:

    _, threads = task_resources()
    a = argparse.Namespace(**config["args"])
    torch.manual_seed(a.seed)
    cfg, encoder, bag, train, val, _ = _prepare(a, threads)
    x_tr = P.featurize(train, encoder, bag, cfg.spec, a.cache)
    x_va = P.featurize(val, encoder, bag, cfg.spec, a.cache)
    y_tr, m_tr = D.label_matrix(train, cfg.heads)
    y_va, m_va = D.label_matrix(val, cfg.heads)
    model = M.build_classifier(cfg)
    if cfg.ngram_mode == "stacked":  # the lexical LRs first; the network trains on their OOF
        x_tr["lexical"] = P.fit_lexical(
            model, bag, [p.text for p in train], y_tr, m_tr, seed=a.seed, n_jobs=threads
        )
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    mine = np.arange(rank, len(train), world)  # each worker its share of the rows
    x_tr, y_tr, m_tr = P.take(x_tr, mine), y_tr[mine], m_tr[mine]
    opt = _optimizer(model, config["opt"])
    start, best, best_state = 0, -1.0, None
    state = resume(model, opt)
    if state:
        start, best, best_state = state["epoch"] + 1, state["best"], state["best_model"]
    model = ray.train.torch.prepare_model(model)
    inner = model.module if hasattr(model, "module") else model
    for epoch in range(start, a.epochs):
        t0 = time.perf_counter()
        loss = P.train_epoch(
            model,
            opt,
            x_tr,
            y_tr,
            m_tr,
            a.batch_size,
            np.random.default_rng(a.seed * 1000 + epoch),
            a.focal_gamma,
        )
        scores = P.head_scores(val, cfg.heads, P.predict(inner, x_va), y_va, m_va, _langs(val))
        score = _val_score(scores)
        if score > best:
            best = score
            best_state = {k: v.detach().clone() for k, v in inner.state_dict().items()}
        metrics = {
            "epoch": epoch,
            "loss": loss,
            "val_mean_auroc": score,
            "best": best,
            "epoch_seconds": time.perf_counter() - t0,
        }
        state = {"model": inner.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch}
        report(metrics, state | {"best": best, "best_model": best_state, "val": scores})


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument(
        "--text-case",
        default="lower",
        choices=F.TEXT_CASES,
        help="the casing the sentence encoder reads (lower: a post scores the same in any case)",
    )
    p.add_argument(
        "--encoder",
        default=F.USE_M3,
        help=f"{F.USE_M3} | {F.E5_SMALL} | a transformers name (hub: "
        f"{F.HUB_DEFAULT}) | offline:all-MiniLM-L6-v2",
    )
    p.add_argument("--fusion", default="early", choices=["early", "late"])
    p.add_argument(
        "--ngram-mode",
        default="stacked",
        choices=list(M.NGRAM_MODES),
        help="stacked (chosen on validation: mean AUROC 0.668 vs wide 0.656)",
    )
    p.add_argument(
        "--labels",
        default="human",
        choices=["human", "natural"],
        help="natural: SYNTHETIC user-report labels (mlsd.harmful_content.synthetic)",
    )
    p.add_argument("--langs", nargs="+", default=list(D.LANGS))
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--dropout", type=float, default=0.3)
    p.add_argument("--ngram-dropout", type=float, default=0.1)
    p.add_argument("--max-ngrams", type=int, default=768)
    p.add_argument("--focal-gamma", type=float, default=0.0)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--wide-lr", type=float, default=5e-3)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--wide-weight-decay", type=float, default=0.3)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--reviews",
        default="var/harmful_content/reviews.sqlite",
        help="the app's review queue (a state store URL or path; 'none': train without it), "
        "whose done reviews join the training rows",
    )
    p.add_argument(
        "--policy-remove",
        type=float,
        default=0.9,
        help="policy: a head removes where its validation precision has climbed "
        "this share of the way from the base rate to 1 (and is >= 0.9)",
    )
    p.add_argument(
        "--policy-review",
        type=float,
        default=0.5,
        help="policy: below remove, people review from this share on",
    )
    p.add_argument("--policy-demote", type=float, default=0.25)
    p.add_argument("--data-root", default=None, help="the demo's data sets")
    g = p.add_argument_group("your own posts (README, 'Your own data')")
    g.add_argument(
        "--posts",
        default=None,
        help="CSV / JSONL: post_id, text, [lang, image, "
        "split], one column per head (1 / 0 / empty)",
    )
    g.add_argument("--heads", default=None, help="comma-separated head columns (default: all)")
    g.add_argument("--max-bad-fraction", type=float, default=0.5)
    p.add_argument("--limit", type=int, default=0, help="first N rows of each set (tests)")
    p.add_argument("--cache", default=os.path.abspath("var/cache/harmful_content"))
    add_train_args(p, "harmful-content")
    p.add_argument("--store", default="artifacts")
    p.add_argument("--name", default="harmful_content")
    return p.parse_args(argv)


def run(a: argparse.Namespace) -> dict:

    if a.reviews and a.reviews != "none":
        a.reviews = pin_url(a.reviews)  # absolute: Ray Train workers start elsewhere
    if a.posts:
        if "://" not in a.posts:
            a.posts = os.path.abspath(a.posts)
        own_posts(a)  # a bad file fails here, before any worker starts
    init_ray(a.num_cpus)
    opt = {
        "lr": a.lr,
        "wide_lr": a.wide_lr,
        "weight_decay": a.weight_decay,
        "wide_weight_decay": a.wide_weight_decay,
    }
    run = fit(train_loop_per_worker, {"args": vars(a), "opt": opt}, a)
    return _export(a, run.state, run.run_name, run.seconds)


def _policy(heads, probs, y, mask, a) -> dict:
    """Each head's remove / review / demote thresholds, from its validation precision."""

    return {
        h: asdict(
            thresholds_from_validation(
                y[mask[:, j], j],
                probs[mask[:, j], j],
                a.policy_remove,
                a.policy_review,
                a.policy_demote,
            )
        )
        for j, h in enumerate(heads)
    }


def _export(a: argparse.Namespace, state: dict, run_name: str, seconds: float) -> dict:

    cfg, encoder, bag, train, val, reviewed = _prepare(a, 1)
    x_va = P.featurize(val, encoder, bag, cfg.spec, a.cache)
    model = M.build_classifier(cfg)
    model.load_state_dict(state["best_model"])
    y_va, m_va = D.label_matrix(val, cfg.heads)
    probs = P.predict(model, x_va)
    scores = P.head_scores(val, cfg.heads, probs, y_va, m_va, _langs(val))
    policy = _policy(cfg.heads, probs, y_va, m_va, a)
    example = P.take(x_va, np.arange(2))
    version = write_classifier(
        ArtifactStore(a.store),
        a.name,
        model,
        cfg,
        example,
        a.encoder,
        bag,
        train={
            "run": run_name,
            "epochs": a.epochs,
            "train_seconds": seconds,
            "labels": a.labels,
            "fusion": a.fusion,
            "ngram_mode": a.ngram_mode,
            "best_val_mean_auroc": state["best"],
            "num_workers": a.num_workers,
        },
        data={
            "rows": len(train),
            "reviewed_rows": reviewed,
            "sets": f"{a.posts} (train split, + reviews)"
            if a.posts
            else "davidson train + mlma en/fr/ar train (+ reviews)",
            "input": own_posts(a)[2].report() if a.posts else None,
            "labels": "SYNTHETIC natural (user reports)" if a.labels == "natural" else "human",
        },
        metrics={"validation": scores},
        policy=policy,
        reference=drift_reference(
            [p.text for p in val], cfg.heads, probs, f"{len(val)} validation posts"
        ),
        validation=ValidationScores(list(cfg.heads), probs, np.where(m_va, y_va, np.nan)),
        languages={p.lang for p in train},
        text_case=a.text_case,
    )
    return {
        "run": run_name,
        "train_seconds": seconds,
        "artifact": f"{a.name}/{version}",
        "reviewed_rows": reviewed,
        "best_val_mean_auroc": state["best"],
    }


def main(argv: list[str] | None = None) -> None:
    print(json.dumps(run(parse_args(argv)), indent=2, default=str))


if __name__ == "__main__":
    main()
