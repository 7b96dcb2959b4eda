"""What training, serving and offline evaluation share: named feature arrays in, per-head
probabilities out, one optimiser epoch over masked multi-task labels."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from mlsd.harmful_content.model import multitask_loss


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
        loss, _ = multitask_loss(model(xb), torch.as_tensor(y[idx], device=device),
                                 torch.as_tensor(mask[idx], device=device), focal_gamma,
                                 pos_weight)  # fmt: skip
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
    out = [torch.sigmoid(model(to_tensors(take(x, np.arange(s, min(s + batch_size, n))),
                                          device))).cpu().numpy()
           for s in range(0, n, batch_size)]  # fmt: skip
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def featurize(posts, encoder, bag, spec, cache=None) -> dict[str, np.ndarray]:
    """Posts (text only: the data sets carry no media) -> the model's named inputs."""
    from mlsd.harmful_content.features import assemble, encode_cached

    texts = [p.text for p in posts]
    return assemble(spec, encode_cached(encoder, texts, cache)) | bag.transform(texts)


def head_scores(posts, heads, probs: np.ndarray, y: np.ndarray, mask: np.ndarray,
                langs=("en", "fr", "ar")) -> dict[str, dict]:  # fmt: skip
    """Per head and language (where that head has both classes there): the evaluation row."""
    from mlsd.harmful_content.evaluation import scores_row

    lang = np.array([p.lang for p in posts])
    out = {}
    for j, h in enumerate(heads):
        for lg in langs:
            sel = mask[:, j] & (lang == lg)
            if sel.sum() and 0 < y[sel, j].sum() < sel.sum():
                out[f"{h}/{lg}"] = scores_row(y[sel, j], probs[sel, j])
    return out
