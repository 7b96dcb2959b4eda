"""Contrastive losses of the book: cosine similarity, softmax with temperature, cross-entropy."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def info_nce(queries: torch.Tensor, keys: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """InfoNCE with in-batch negatives: row i of ``queries`` matches row i of ``keys``.

    queries, keys: (B, D). Every other key in the batch is a negative (the book's picture:
    one positive, n-1 negatives, softmax over similarities, cross-entropy).
    """
    if queries.shape != keys.shape:
        raise ValueError(f"queries {tuple(queries.shape)} and keys {tuple(keys.shape)} differ")
    q = F.normalize(queries, dim=-1)
    k = F.normalize(keys, dim=-1)
    logits = q @ k.T / temperature  # (B, B)
    target = torch.arange(q.shape[0], device=q.device)
    return F.cross_entropy(logits, target)


def nt_xent(
    z1: torch.Tensor,
    z2: torch.Tensor,
    temperature: float = 0.2,
    same_group: torch.Tensor | None = None,
) -> torch.Tensor:
    """SimCLR's NT-Xent over 2B views: each view's positive is its twin, the other 2B-2 negatives.

    z1, z2: (B, D) projections of two views of the same B images. ``same_group`` (B,) optional
    group ids (class labels, click sessions): views sharing a group are positives as well
    (supervised-contrastive form), so label or interaction positives use the same loss.
    """
    if z1.shape != z2.shape:
        raise ValueError(f"views differ in shape: {tuple(z1.shape)} vs {tuple(z2.shape)}")
    b = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2], dim=0), dim=-1)  # (2B, D)
    logits = z @ z.T / temperature  # (2B, 2B)
    eye = torch.eye(2 * b, dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(eye, float("-inf"))
    idx = torch.arange(2 * b, device=z.device)
    twin = (idx + b) % (2 * b)
    if same_group is None:
        return F.cross_entropy(logits, twin)
    g = torch.cat([same_group, same_group])
    pos = (g[:, None] == g[None, :]) & ~eye  # (2B, 2B), twin included
    log_prob = logits.log_softmax(dim=1).masked_fill(eye, 0.0)
    return -((log_prob * pos).sum(1) / pos.sum(1)).mean()
