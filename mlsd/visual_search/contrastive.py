"""Contrastive training of the image encoder, the framework-free core that Ray Train runs.

The book lists three ways to get a positive for an anchor image; each is a ``positives`` mode:
- ``self``: self-supervision, two augmented views of the same image (SimCLR);
- ``neighbours``: self-supervision too: with probability ``neighbour_prob`` the positive is
  one of the anchor's k nearest unlabelled neighbours (NNCLR-style mined positives), else itself;
- ``labels``: human labelling, another image of the same class, loss in supervised-contrastive
  form (all same-class views in the batch are positives);
- ``clicks``: user interactions, an image clicked from the anchor's result list (a click log of
  (query_image, clicked_image) pairs); noisy, as the book warns.
Negatives are the rest of the batch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import faiss
import numpy as np
import torch

from mlsd.losses import nt_xent
from mlsd.visual_search.augment import BatchAugment, simclr_augment

POSITIVE_MODES = ("self", "neighbours", "labels", "clicks")


@dataclass
class ContrastiveConfig:
    positives: str = "neighbours"
    epochs: int = 10
    batch_size: int = 512
    lr: float = 2e-3
    weight_decay: float = 1e-4
    temperature: float = 0.2
    aug_strength: float = 1.0
    neighbour_k: int = 5
    neighbour_prob: float = 0.7
    refresh_neighbours_every: int = 0  # epochs; re-mine neighbours with the model; 0 = never
    augment: str = "batched"  # batched (BatchAugment) | torchvision (per-sample v2 pipeline)
    bf16: bool = True
    max_steps_per_epoch: int = 0  # 0 = full epochs
    seed: int = 0

    def __post_init__(self):
        if self.positives not in POSITIVE_MODES:
            raise ValueError(f"positives must be one of {POSITIVE_MODES}, got {self.positives!r}")

    def to_dict(self) -> dict:
        return asdict(self)


def nearest_neighbours(vectors: np.ndarray, k: int, pca_dim: int = 64) -> np.ndarray:
    """(N, k) indices of each row's k nearest other rows by cosine, after centring + PCA.

    Mining positives in pixel space first, then (``refresh_neighbours_every``) in the model's
    own embedding space as it improves: NNCLR-style, no labels involved.
    """

    x = np.ascontiguousarray(vectors.reshape(len(vectors), -1), dtype=np.float32)
    x = x - x.mean(axis=0, keepdims=True)
    if pca_dim and x.shape[1] > pca_dim:
        pca = faiss.PCAMatrix(x.shape[1], pca_dim)
        pca.train(x[np.random.default_rng(0).permutation(len(x))[:20000]])
        x = pca.apply(x)
    faiss.normalize_L2(x)
    index = faiss.IndexFlatIP(x.shape[1])
    index.add(x)
    _, nn_idx = index.search(x, k + 1)
    out = np.empty((len(x), k), dtype=np.int64)
    for i, row in enumerate(nn_idx):  # drop self wherever it landed (duplicates can tie)
        row = row[row != i][:k]
        out[i, : len(row)] = row
        out[i, len(row) :] = i
    return out


class PositiveSampler:
    """Draws a positive index for each anchor index, per the configured mode."""

    def __init__(
        self,
        mode: str,
        n: int,
        labels: np.ndarray | None = None,
        neighbours: np.ndarray | None = None,
        clicks: np.ndarray | None = None,
        neighbour_prob: float = 0.5,
        seed: int = 0,
    ):
        self.mode, self.n, self.prob = mode, n, neighbour_prob
        self.rng = np.random.default_rng(seed)
        self.labels = labels
        self.neighbours = neighbours
        if mode == "labels":
            if labels is None:
                raise ValueError("positives='labels' needs labels")
            self._by_label = {c: np.flatnonzero(labels == c) for c in np.unique(labels)}
        if mode == "neighbours" and neighbours is None:
            raise ValueError("positives='neighbours' needs a neighbour table")
        if mode == "clicks":
            if clicks is None or len(clicks) == 0:
                raise ValueError("positives='clicks' needs a non-empty click log")
            self._clicked: dict[int, list[int]] = {}
            for q, c in np.asarray(clicks, dtype=np.int64):
                self._clicked.setdefault(int(q), []).append(int(c))
                self._clicked.setdefault(int(c), []).append(int(q))

    def __call__(self, anchors: np.ndarray) -> np.ndarray:
        a = np.asarray(anchors, dtype=np.int64)
        if self.mode == "self":
            return a.copy()
        if self.mode == "neighbours":
            pick = self.neighbours[a, self.rng.integers(0, self.neighbours.shape[1], len(a))]
            return np.where(self.rng.random(len(a)) < self.prob, pick, a)
        if self.mode == "labels":
            return np.array([self.rng.choice(self._by_label[self.labels[i]]) for i in a])
        out = a.copy()  # clicks: anchors never clicked fall back to self-supervision
        for j, i in enumerate(a):
            partners = self._clicked.get(int(i))
            if partners:
                out[j] = partners[self.rng.integers(0, len(partners))]
        return out

    def groups(self, anchors: np.ndarray) -> np.ndarray | None:
        """Group ids for the supervised-contrastive form (labels mode only)."""
        return None if self.mode != "labels" else self.labels[np.asarray(anchors)]


def contrastive_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    view1: torch.Tensor,
    view2: torch.Tensor,
    temperature: float,
    groups: torch.Tensor | None = None,
    bf16: bool = False,
) -> float:
    """One optimisation step on a batch of positive pairs (B, C, H, W) x 2; returns the loss.

    ``bf16``: autocast the forward pass to bfloat16 (about 3x faster on CPUs with AVX-512
    BF16, and the usual choice on GPUs); the loss is computed in float32.
    """
    model.train()
    project = model.module.project if hasattr(model, "module") else model.project
    with torch.autocast(view1.device.type, dtype=torch.bfloat16, enabled=bf16):
        z = project(torch.cat([view1, view2]))  # (2B, P)
    z1, z2 = z.float().chunk(2)
    loss = nt_xent(z1, z2, temperature=temperature, same_group=groups)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


class PairMaker:
    """Anchor ids -> (anchor view, positive view, groups), augmented; runs on the trainer.

    Holds the whole training set (the positives of a batch can be anywhere in it), samples
    positives with :class:`PositiveSampler` and augments both sides.
    """

    def __init__(
        self,
        images: torch.Tensor,  # (N, C, H, W) float in [0, 1]
        sampler: PositiveSampler,
        augment: str = "batched",
        strength: float = 1.0,
        seed: int = 0,
    ):

        self.images, self.sampler, self.mode = images, sampler, augment
        g = torch.Generator().manual_seed(seed)
        if augment == "batched":
            self.batched = BatchAugment(strength, generator=g)
        elif augment == "torchvision":
            self.per_sample = simclr_augment(images.shape[-1], strength)
        else:
            raise ValueError(f"augment must be 'batched' or 'torchvision', got {augment!r}")

    def _aug(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "batched":
            return self.batched(x)
        return torch.stack([self.per_sample(img) for img in x])

    def __call__(self, anchor_ids: np.ndarray, device: torch.device | str = "cpu"):
        anchor_ids = np.asarray(anchor_ids, dtype=np.int64)
        pos_ids = self.sampler(anchor_ids)
        a = self.images[torch.as_tensor(anchor_ids)].to(device)
        p = self.images[torch.as_tensor(pos_ids)].to(device)
        g = self.sampler.groups(anchor_ids)
        groups = None if g is None else torch.as_tensor(g, device=device)
        return self._aug(a), self._aug(p), groups


class FeatureViews:
    """Anchor ids -> (anchor view, positive view, None) for an adapted encoder, whose views
    are backbone features of augmented crops computed once (``views`` (N, K, D), by Ray
    Data): each side draws one of its image's K views; positives come from ``sampler``."""

    def __init__(self, views: torch.Tensor, sampler: PositiveSampler, seed: int = 0):
        self.views, self.sampler = views, sampler
        self.g = torch.Generator().manual_seed(seed)

    def __call__(self, anchor_ids: np.ndarray, device: torch.device | str = "cpu"):
        a = torch.as_tensor(np.asarray(anchor_ids, dtype=np.int64))
        p = torch.as_tensor(self.sampler(a.numpy()))
        k = self.views.shape[1]
        k1, k2 = torch.randint(0, k, (2, len(a)), generator=self.g)
        va = self.views[a, k1].float().to(device)  # (B, D)
        vp = self.views[p, k2].float().to(device)
        return va, vp, None


@torch.no_grad()
def embed_all(model: torch.nn.Module, images: torch.Tensor, batch: int = 2048, bf16: bool = False):
    """(N, C, H, W) -> (N, D) float32 numpy embeddings with the model in eval mode."""
    inner = model.module if hasattr(model, "module") else model
    was = inner.training
    inner.eval()
    dev = next(inner.parameters()).device
    out = []
    for i in range(0, len(images), batch):
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
            out.append(inner(images[i : i + batch].to(dev)).float().cpu())
    inner.train(was)
    return torch.cat(out).numpy()
