"""The multi-task harmful-content classifier, in the book's two fusion designs.

- **Early fusion** (the book's choice, :class:`MultiTaskClassifier`): every modality's vector
  (zero + a ``present`` flag when missing) is concatenated, shared layers learn across them,
  and one head per harm gives its logit. It can learn harm that lives in the *combination* of
  inputs (a benign caption on a benign image that together are a hateful meme).
- **Late fusion** (the baseline, :class:`LateFusionClassifier`): one small network per modality
  predicts every head on its own; the per-modality logits are summed. Each modality's evidence
  adds up independently, so a combination it has never seen alone stays invisible.

Both take the named inputs of :func:`mlsd.harmful_content.features.assemble` and return
(B, H) logits. The loss is the book's: one loss per head (BCE, or focal against imbalance),
each over the rows that carry that head's label, summed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from mlsd.harmful_content.features import LOCATION_BUCKETS, FeatureSpec

NGRAM_MODES = ("wide", "deep", "both", "stacked")


@dataclass
class ClassifierConfig:
    heads: tuple[str, ...]
    spec: FeatureSpec = field(default_factory=FeatureSpec)
    fusion: str = "early"  # "early" | "late"
    hidden: int = 256
    depth: int = 2  # shared layers (early) / layers per modality (late)
    dropout: float = 0.2
    modality_dropout: float = 0.1  # chance, per row and non-text modality, of hiding it
    location_dim: int = 8
    ngram_dim: int = 64  # the lexical bag's embedding (spec.ngram_buckets > 0)
    ngram_dropout: float = 0.3  # chance of hiding each n-gram while training (memorisation)
    # how the bag enters: "wide" (a linear per-head weight per n-gram added to the logits: a
    # multi-task TF-IDF logistic regression trained with the rest), "deep" (embedded, into
    # the shared layers), "both", or "stacked" (the wide weights are per-head logistic
    # regressions fitted first, C by cross-validation, and frozen; the network learns on top
    # of their out-of-fold logits: stacked generalisation)
    ngram_mode: str = "wide"
    lexical_input: bool = True  # stacked: the lexical logits are also a shared-layer input

    def __post_init__(self):
        if self.ngram_mode not in NGRAM_MODES:
            raise ValueError(f"ngram_mode must be one of {NGRAM_MODES}, not {self.ngram_mode!r}")
        if self.fusion not in ("early", "late"):
            raise ValueError(f"fusion must be 'early' or 'late', not {self.fusion!r}")
        self.heads = tuple(self.heads)
        if isinstance(self.spec, dict):
            self.spec = FeatureSpec(**self.spec)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["heads"] = list(self.heads)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ClassifierConfig:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


def _mlp(d_in: int, hidden: int, depth: int, dropout: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(depth):
        layers += [nn.Linear(d_in if i == 0 else hidden, hidden), nn.GELU(), nn.Dropout(dropout)]
    return nn.Sequential(*layers)


class _Inputs(nn.Module):
    """Named inputs -> per-modality vectors (each with its present flag appended), hiding
    non-text modalities at random while training (per-modality dropout: no one modality may
    carry every decision)."""

    def __init__(self, cfg: ClassifierConfig):
        super().__init__()
        self.cfg = cfg
        self.mods = cfg.spec.modalities()
        self.location = nn.Embedding(LOCATION_BUCKETS, cfg.location_dim)
        if cfg.spec.ngram_buckets and cfg.ngram_mode in ("deep", "both"):
            self.ngrams = nn.Embedding(cfg.spec.ngram_buckets, cfg.ngram_dim, padding_idx=0)
            nn.init.normal_(self.ngrams.weight, std=0.1)
            self.mods = {"text": self.mods["text"], "ngrams": cfg.ngram_dim} | {
                k: v for k, v in self.mods.items() if k != "text"
            }

    def dims(self) -> dict[str, int]:
        d = {m: n + (0 if m in ("text", "ngrams") else 1) for m, n in self.mods.items()}
        d["author"] += self.cfg.location_dim
        return d

    def forward(self, x: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = {}
        for m in self.mods:
            if m == "ngrams":  # TF-IDF-weighted sum of the bag's embeddings: (B, L) -> (B, D)
                out[m] = bag(self.ngrams, x, self.cfg.ngram_dropout if self.training else 0.0)
                continue
            v = x[m]
            if m == "author":
                v = torch.cat([v, self.location(x["location"])], 1)
            if m != "text":
                present = x[f"{m}_present"]
                if self.training and self.cfg.modality_dropout > 0:
                    keep = torch.rand_like(present) >= self.cfg.modality_dropout
                    present = present * keep
                v = torch.cat([v * present, present], 1)
            out[m] = v
        return out


def bag(table: nn.Embedding, x: dict[str, torch.Tensor], dropout: float) -> torch.Tensor:
    """TF-IDF-weighted sum of an n-gram bag's rows: ids, weights (B, L) -> (B, D)."""
    w = x["ngram_weights"]
    if dropout > 0:
        w = w * (torch.rand_like(w) >= dropout) / (1 - dropout)
    return (table(x["ngram_ids"]) * w.unsqueeze(-1)).sum(1)


class _Wide(nn.Module):
    """The bag's linear path: one weight per (n-gram bucket, head), summed into the logits.

    ``stacked``: the weights and a per-head bias are fitted logistic regressions, frozen
    (:func:`mlsd.harmful_content.pipeline.fit_lexical` sets them); while training, the rows'
    out-of-fold logits come in as ``lexical`` (B, H) instead, so the network learns how far
    to trust the lexical model on rows it has not seen; a learned per-head scale."""

    def __init__(self, cfg: ClassifierConfig):
        super().__init__()
        self.cfg = cfg
        self.table = nn.Embedding(cfg.spec.ngram_buckets, len(cfg.heads), padding_idx=0)
        nn.init.zeros_(self.table.weight)
        self.stacked = cfg.ngram_mode == "stacked"
        if self.stacked:
            self.table.weight.requires_grad_(False)
            self.register_buffer("bias", torch.zeros(len(cfg.heads)))
            self.scale = nn.Parameter(torch.ones(len(cfg.heads)))

    def lexical(self, x: dict[str, torch.Tensor]) -> torch.Tensor:
        """Stacked: the lexical regressions' logits (B, H), out-of-fold while training."""
        return x["lexical"] if "lexical" in x else bag(self.table, x, 0.0) + self.bias

    def forward(self, x: dict[str, torch.Tensor], lexical: torch.Tensor | None = None):
        if self.stacked:
            return (self.lexical(x) if lexical is None else lexical) * self.scale
        return bag(self.table, x, self.cfg.ngram_dropout if self.training else 0.0)


def _wide(cfg: ClassifierConfig) -> nn.Module | None:
    wide = ("wide", "both", "stacked")
    return _Wide(cfg) if cfg.spec.ngram_buckets and cfg.ngram_mode in wide else None


class MultiTaskClassifier(nn.Module):
    """Early fusion: concatenate -> shared layers -> one linear head per harm. (B, H) logits."""

    def __init__(self, cfg: ClassifierConfig):
        super().__init__()
        self.cfg = cfg
        self.inputs = _Inputs(cfg)
        d_in = sum(self.inputs.dims().values())
        self.wide = _wide(cfg)
        # stacked: the shared layers also see the lexical logits (how sure the n-gram model
        # is, next to what the sentence vector says)
        self.see_lexical = self.wide is not None and self.wide.stacked and cfg.lexical_input
        d_in += len(cfg.heads) if self.see_lexical else 0
        self.shared = _mlp(d_in, cfg.hidden, cfg.depth, cfg.dropout)
        self.heads = nn.ModuleList(nn.Linear(cfg.hidden, 1) for _ in cfg.heads)

    def forward(self, x: dict[str, torch.Tensor]) -> torch.Tensor:
        parts = self.inputs(x)
        feats = [parts[m] for m in self.inputs.mods]
        lexical = self.wide.lexical(x) if self.see_lexical else None
        if lexical is not None:
            feats.append(torch.tanh(lexical / 4))  # (B, H), bounded
        z = self.shared(torch.cat(feats, 1))  # (B, hidden)
        logits = torch.cat([h(z) for h in self.heads], 1)  # (B, H)
        return logits + self.wide(x, lexical) if self.wide is not None else logits


class LateFusionClassifier(nn.Module):
    """Late fusion: one network per modality predicts every head; logits summed. (B, H)."""

    def __init__(self, cfg: ClassifierConfig):
        super().__init__()
        self.cfg = cfg
        self.inputs = _Inputs(cfg)
        h = len(cfg.heads)
        self.towers = nn.ModuleDict(
            {
                m: nn.Sequential(
                    _mlp(d, cfg.hidden, cfg.depth, cfg.dropout), nn.Linear(cfg.hidden, h)
                )
                for m, d in self.inputs.dims().items()
            }
        )
        self.wide = _wide(cfg)

    def forward(self, x: dict[str, torch.Tensor]) -> torch.Tensor:
        parts = self.inputs(x)
        logits = torch.stack([self.towers[m](parts[m]) for m in self.inputs.mods]).sum(0)
        return logits + self.wide(x) if self.wide is not None else logits


def build_classifier(cfg: ClassifierConfig) -> nn.Module:
    return MultiTaskClassifier(cfg) if cfg.fusion == "early" else LateFusionClassifier(cfg)


def focal_bce(logits: torch.Tensor, y: torch.Tensor, gamma: float = 2.0) -> torch.Tensor:
    """Focal loss (Lin et al. 2017): BCE scaled by (1 - p_t)^gamma, so the many easy rows of
    an imbalanced head stop drowning its few hard ones. Elementwise."""
    bce = nn.functional.binary_cross_entropy_with_logits(logits, y, reduction="none")
    p_t = torch.exp(-bce)
    return (1 - p_t) ** gamma * bce


def multitask_loss(
    logits: torch.Tensor,  # (B, H)
    y: torch.Tensor,  # (B, H) in {0, 1}
    mask: torch.Tensor,  # (B, H) bool: the row carries this head's label
    focal_gamma: float = 0.0,
    pos_weight: torch.Tensor | None = None,  # (H,)
) -> tuple[torch.Tensor, dict[str, float]]:
    """Sum over heads of each head's mean loss over its labelled rows (heads without a label
    in the batch add nothing). Returns the loss and each head's term."""
    if focal_gamma > 0:
        per = focal_bce(logits, y, focal_gamma)
    else:
        per = nn.functional.binary_cross_entropy_with_logits(
            logits, y, reduction="none", pos_weight=pos_weight
        )
    m = mask.float()
    count = m.sum(0)  # (H,)
    head_loss = (per * m).sum(0) / count.clamp(min=1)
    total = head_loss[count > 0].sum() if bool((count > 0).any()) else logits.sum() * 0
    return total, {"loss": float(total.detach())}
