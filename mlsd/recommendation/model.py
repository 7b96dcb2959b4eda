"""The ranking model: scores (user, candidate video) pairs with the book's features.

User tower: demographics (age bucket, gender, occupation, zip region), context (hour of day,
day of week), and history = the mean ID embedding of watched videos and of liked videos (the
book's "average of embeddings"). Video side: ID embedding, projected title embedding, dense
features. A pair MLP sees both plus their dot products and predicts P(relevant).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from mlsd.recommendation.features import N_AGE, N_DENSE, N_DOW, N_GENDER, N_ZIP, SCORE_Z


@dataclass
class RankerConfig:
    n_items: int
    n_occupations: int
    title_dim: int = 384
    dim: int = 32
    hidden: int = 128
    dropout: float = 0.1
    use_ids: bool = True  # ID embeddings of candidates and history (memorise; need data)

    def to_dict(self) -> dict:
        return asdict(self)


class RankingModel(nn.Module):
    def __init__(self, cfg: RankerConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.dim
        self.item = nn.Embedding(cfg.n_items, d)
        nn.init.normal_(self.item.weight, std=0.05)
        self.age = nn.Embedding(N_AGE, 8)
        self.gender = nn.Embedding(N_GENDER, 4)
        self.occupation = nn.Embedding(cfg.n_occupations + 1, 8)
        self.zip = nn.Embedding(N_ZIP, 4)
        self.hour = nn.Embedding(24, 4)
        self.dow = nn.Embedding(N_DOW, 4)
        self.user = nn.Sequential(nn.Linear(8 + 4 + 8 + 4 + 4 + 4 + 2 * d, d), nn.ReLU())
        self.title = nn.Linear(cfg.title_dim, d)
        self.score_weight = nn.Parameter(torch.tensor(1.0))
        pair_in = d + d + d + N_DENSE + 3
        self.mlp = nn.Sequential(
            nn.Linear(pair_in, cfg.hidden),
            nn.ReLU(),
            nn.Dropout(cfg.dropout),
            nn.Linear(cfg.hidden, cfg.hidden // 2),
            nn.ReLU(),
            nn.Linear(cfg.hidden // 2, 1),
        )
        # start exactly at the candidate generator's order; training adds what features know
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)

    def _bag(self, items: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        """Mean of the ID embeddings per user (bags given by offsets, as ``embedding_bag``);
        an empty history gives zeros. Segment sums rather than ``embedding_bag``, so the ONNX
        graph needs no loop."""
        B, H = offsets.shape[0], items.shape[0]
        starts = torch.zeros(H + 1, dtype=torch.int64, device=items.device)
        starts = starts.scatter_add(0, offsets[1:], torch.ones_like(offsets[1:]))
        seg = torch.cumsum(starts, 0)[:H]  # (H,) the bag of each history entry
        emb = self.item(items)  # (H, d)
        total = torch.zeros(B, emb.shape[1], dtype=emb.dtype, device=emb.device)
        total = total.scatter_add(0, seg[:, None].expand(-1, emb.shape[1]), emb)
        count = torch.zeros(B, dtype=emb.dtype, device=emb.device)
        count = count.scatter_add(0, seg, torch.ones(H, dtype=emb.dtype, device=emb.device))
        return total / count.clamp_min(1.0)[:, None]  # (B, d)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """-> (P,) logits, one per (user, candidate) pair."""
        cats = batch["user_cats"]  # (B, 4)
        watched = self._bag(batch["hist"], batch["hist_offsets"])  # (B, d)
        liked = self._bag(batch["liked"], batch["liked_offsets"])  # (B, d)
        u = self.user(
            torch.cat(
                [
                    self.age(cats[:, 0]),
                    self.gender(cats[:, 1]),
                    self.occupation(cats[:, 2]),
                    self.zip(cats[:, 3]),
                    self.hour(batch["hour"]),
                    self.dow(batch["dow"]),
                    watched,
                    liked,
                ],
                dim=1,
            )
        )  # (B, d)
        pu = batch["pair_user"]
        item = self.item(batch["item"])  # (P, d)
        if not self.cfg.use_ids:
            item, watched, liked = item * 0, watched * 0, liked * 0
        title = self.title(batch["title"].float())  # (P, d)
        dots = torch.stack(
            [
                (u[pu] * item).sum(1),
                (watched[pu] * item).sum(1),
                (liked[pu] * item).sum(1),
            ],
            dim=1,
        )  # (P, 3)
        dense = batch["dense"].float()
        x = torch.cat([u[pu], item, title, dense, dots], dim=1)
        # residual on the candidate generator's standardised score: starts as its ranking
        return self.mlp(x).squeeze(1) + self.score_weight * dense[:, SCORE_Z]
