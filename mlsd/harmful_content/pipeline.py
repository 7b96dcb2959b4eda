"""What training, serving and offline evaluation share: named feature arrays in, per-head
probabilities out, one optimiser epoch over masked multi-task labels."""

from __future__ import annotations

import asyncio

import numpy as np
import torch
from joblib import Parallel, delayed
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold
from torch import nn

from mlsd.harmful_content.artifact import CLASSIFIER_FILES, Probabilities, load_bag, load_classifier
from mlsd.harmful_content.evaluation import scores_row
from mlsd.harmful_content.features import (
    artifact_encoder,
    assemble,
    encode_cached,
    image_vectors,
)
from mlsd.harmful_content.model import multitask_loss
from mlsd.runtime import arun, load_runner


def to_tensors(x: dict[str, np.ndarray], device: str | torch.device = "cpu") -> dict:
    return {k: torch.as_tensor(v, device=device) for k, v in x.items()}


def take(x: dict[str, np.ndarray], idx: np.ndarray) -> dict[str, np.ndarray]:
    return {k: v[idx] for k, v in x.items()}


def train_epoch(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    x: dict[str, np.ndarray],  # named inputs, each (N, ...)
    y: np.ndarray,  # (N, H)
    mask: np.ndarray,  # (N, H) bool
    batch_size: int = 256,
    rng: np.random.Generator | None = None,
    focal_gamma: float = 0.0,
    pos_weight: torch.Tensor | None = None,
) -> float:
    """One shuffled pass; returns the mean summed loss."""
    model.train()
    rng = rng or np.random.default_rng(0)
    order = rng.permutation(len(y))
    device = next(model.parameters()).device
    losses = []
    for s in range(0, len(order), batch_size):
        idx = order[s : s + batch_size]
        xb = to_tensors(take(x, idx), device)
        loss, _ = multitask_loss(
            model(xb),
            torch.as_tensor(y[idx], device=device),
            torch.as_tensor(mask[idx], device=device),
            focal_gamma,
            pos_weight,
        )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return float(np.mean(losses)) if losses else float("nan")


@torch.no_grad()
def predict(model: nn.Module, x: dict[str, np.ndarray], batch_size: int = 1024) -> np.ndarray:
    """(N, H) probabilities."""
    model.eval()
    device = next(model.parameters()).device
    n = len(next(iter(x.values())))
    out = [
        torch.sigmoid(model(to_tensors(take(x, np.arange(s, min(s + batch_size, n))), device)))
        .cpu()
        .numpy()
        for s in range(0, n, batch_size)
    ]
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def _held_out_logits(x, y: np.ndarray, c: float, fit_idx, held) -> np.ndarray:

    return (
        LogisticRegression(C=c, max_iter=2000)
        .fit(x[fit_idx], y[fit_idx])
        .decision_function(x[held])
    )


def fit_lexical(
    model: nn.Module,
    bag,
    texts,
    y: np.ndarray,
    mask: np.ndarray,
    cs=(0.25, 1.0, 4.0, 16.0),
    folds: int = 5,
    seed: int = 0,
    n_jobs: int = 1,
) -> np.ndarray:
    """The stacked wide path: per head, a logistic regression over the TF-IDF n-gram bag of
    the rows carrying that head (C by ``folds``-fold CV on AUROC), written into the model's
    frozen wide table + bias; returns every row's out-of-fold logits at the chosen C (N, H):
    the rows' ``lexical`` input while the network trains (a row's own label never leaks into
    its input). Rows without a head get the full fit's logit (their loss is masked anyway)."""

    wide = model.wide
    x = bag.matrix(texts)
    oof = np.zeros(y.shape, np.float32)
    table = wide.table.weight.detach().clone()
    for j in range(y.shape[1]):
        rows = np.nonzero(mask[:, j])[0]
        yj = y[rows, j].astype(int)
        if min(yj.sum(), len(yj) - yj.sum()) < folds:
            continue  # too few of a class to fit or to cross-validate: the head has no LR
        splits = list(StratifiedKFold(folds, shuffle=True, random_state=seed).split(rows, yj))
        best = (-1.0, None, None)

        xj = x[rows]
        got = Parallel(n_jobs=n_jobs, prefer="threads")(
            delayed(_held_out_logits)(xj, yj, c, f, h) for c in cs for f, h in splits
        )
        for k, c in enumerate(cs):
            held_out = np.zeros(len(rows), np.float32)
            for (_, held), logits in zip(splits, got[k * folds : (k + 1) * folds], strict=True):
                held_out[held] = logits
            auc = roc_auc_score(yj, held_out)
            if auc > best[0]:
                best = (auc, c, held_out)
        full = LogisticRegression(C=best[1], max_iter=2000).fit(x[rows], yj)
        table[1:, j] = torch.as_tensor(full.coef_[0], dtype=table.dtype)  # row 0 pads
        wide.bias[j] = float(full.intercept_[0])
        oof[:, j] = full.decision_function(x)
        oof[rows, j] = best[2]
    with torch.no_grad():
        wide.table.weight.copy_(table)
    return oof


def featurize(posts, encoder, bag, spec, cache=None) -> dict[str, np.ndarray]:
    """Posts -> the model's named inputs: the text, and a post's image (``meta["image"]``, a
    path or URI: the shared backbone's vector) when the model has an image input. An image
    that cannot be read leaves that post text-only."""

    texts = [p.text for p in posts]
    images = None
    if spec.image_dim:
        images, _ = image_vectors([p.meta.get("image") for p in posts])
    return assemble(spec, encode_cached(encoder, texts, cache), images=images) | bag.transform(
        texts
    )


def head_scores(
    posts, heads, probs: np.ndarray, y: np.ndarray, mask: np.ndarray, langs=("en", "fr", "ar")
) -> dict[str, dict]:
    """Per head and language (where that head has both classes there): the evaluation row."""

    lang = np.array([p.lang for p in posts])
    out = {}
    for j, h in enumerate(heads):
        for lg in langs:
            sel = mask[:, j] & (lang == lg)
            if sel.sum() and 0 < y[sel, j].sum() < sel.sum():
                out[f"{h}/{lg}"] = scores_row(y[sel, j], probs[sel, j])
    return out


class HarmScorer:
    """A classifier artifact ready to score posts: its text encoder, its n-gram bag and the
    classifier through the shared runner (``torch`` or ``onnx``), on the given device.
    Serving and offline evaluation score through it alike.

    A post is a dict: ``text`` (cleaned), optional ``comments`` (list of str), ``images`` /
    ``videos`` (lists of backbone vectors, (n, D) arrays), ``reactions``, ``author``, ``context``
    (dicts of :mod:`mlsd.harmful_content.features`). Inputs the model was not built with are
    reported by :meth:`unused`, never silently mixed in."""

    def __init__(
        self,
        art,
        backend: str = "onnx",
        device: str = "cpu",
        num_threads: int | None = None,
        gpu_ids=None,
        encoder=None,
        server: dict | None = None,
    ):

        self.art = art
        model, self.cfg = load_classifier(art, None)  # the runner places it
        self.heads = list(self.cfg.heads)
        self.spec = self.cfg.spec
        self.bag = load_bag(art)
        name = art.config["text_encoder"]
        self.encoder = encoder or artifact_encoder(art.config, num_threads, device)
        if self.encoder.dim != self.spec.text_dim:
            raise ValueError(
                f"text encoder {name!r} gives {self.encoder.dim}-d vectors; the "
                f"classifier expects {self.spec.text_dim}"
            )
        self.runner = load_runner(
            art,
            backend,
            CLASSIFIER_FILES,
            lambda: Probabilities(model),
            device=device,
            num_threads=num_threads,
            gpu_ids=gpu_ids,
            server=server,
            what="classifier",
        )
        self.device = self.runner.device
        self.score([{"text": "warm up"}])

    def unused(self, post: dict) -> list[str]:
        """The inputs of ``post`` this model has no place for."""
        mods = self.spec.modalities()
        return [
            k
            for k, m in (("images", "image"), ("videos", "video"))
            if post.get(k) and m not in mods
        ]

    def features(self, posts: list[dict]) -> dict[str, np.ndarray]:

        texts = [p.get("text") or "" for p in posts]
        comments = [p.get("comments") or [] for p in posts]
        flat = [c for cs in comments for c in cs]
        vecs = self.encoder.encode(texts + flat)  # one encoder batch: posts then comments
        text, rest = vecs[: len(texts)], vecs[len(texts) :]
        pooled, s = [], 0
        for cs in comments:
            pooled.append(rest[s : s + len(cs)] if cs else None)
            s += len(cs)

        def media(key):
            return [
                np.concatenate([np.atleast_2d(v) for v in p[key]]) if p.get(key) else None
                for p in posts
            ]

        x = assemble(
            self.spec,
            text,
            pooled,
            media("images"),
            media("videos"),
            [p.get("reactions") for p in posts],
            [p.get("author") for p in posts],
            [p.get("context") for p in posts],
        )
        if self.bag is not None:
            x |= self.bag.transform(texts)
        return x

    def score(self, posts: list[dict]) -> np.ndarray:
        """(B, H) probabilities, heads in ``self.heads`` order."""
        if not posts:
            return np.zeros((0, len(self.heads)), np.float32)
        return np.asarray(self.runner.run(self.features(posts)), np.float32)

    async def ascore(self, posts: list[dict]) -> np.ndarray:
        """``score`` awaited: features in a worker thread, the classifier through
        :func:`mlsd.runtime.arun` (Triton's asyncio client, or in-process in a thread)."""

        if not posts:
            return np.zeros((0, len(self.heads)), np.float32)
        x = await asyncio.to_thread(self.features, posts)
        return np.asarray(await arun(self.runner, x), np.float32)
