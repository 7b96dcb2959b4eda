"""From per-head probabilities to what happens to the post, and which harm drove it.

Each head has its own thresholds (heads are calibrated differently and harms differ in cost):
``p >= remove`` removes; ``review <= p < remove`` is the low-confidence band a person looks
at (the book's human-review loop); ``demote <= p < review`` demotes (less distribution, no
removal); below ``demote`` the head does not object. The post takes the most severe action any
head asks for; ``reasons`` are the heads that asked for it, most confident first.
"""

from __future__ import annotations

from dataclasses import dataclass, field

ACTIONS = ("allow", "demote", "review", "remove")  # least to most severe


@dataclass(frozen=True)
class HeadPolicy:
    remove: float = 0.9
    review: float = 0.6
    demote: float = 0.4

    def __post_init__(self):
        if not 0.0 <= self.demote <= self.review <= self.remove <= 1.0:
            raise ValueError(
                f"thresholds must satisfy 0 <= demote <= review <= remove <= 1: {self}"
            )

    def action(self, p: float) -> str:
        if p >= self.remove:
            return "remove"
        if p >= self.review:
            return "review"
        if p >= self.demote:
            return "demote"
        return "allow"


@dataclass
class Decision:
    action: str
    reasons: list[str]
    scores: dict[str, float]


@dataclass
class Policy:
    heads: dict[str, HeadPolicy] = field(default_factory=dict)
    default: HeadPolicy = field(default_factory=HeadPolicy)

    @classmethod
    def from_dict(cls, d: dict | None) -> Policy:
        d = dict(d or {})
        default = HeadPolicy(**d.pop("default", {}))
        return cls({h: HeadPolicy(**t) for h, t in d.items()}, default)

    def decide(self, scores: dict[str, float]) -> Decision:
        per = {h: self.heads.get(h, self.default).action(p) for h, p in scores.items()}
        worst = max(per.values(), key=ACTIONS.index, default="allow")
        reasons = [] if worst == "allow" else sorted(
            (h for h, a in per.items() if a == worst), key=lambda h: -scores[h]
        )  # fmt: skip
        return Decision(worst, reasons, dict(scores))


def thresholds_from_validation(
    y, p, remove: float = 0.9, review: float = 0.5, demote: float = 0.25, min_support: int = 20
) -> HeadPolicy:
    """One head's thresholds from its validation scores, each where the head's precision first
    climbs a given share of the way from the base rate to 1: ``remove`` 0.9 (automatic removal
    only where the model is rarely wrong; never below 0.9 precision), ``review`` 0.5 (the band
    between goes to people), ``demote`` 0.25. Shares of the way, not raw precisions, because
    the data sets' base rates differ (Davidson's offensive head is 83 % positive: a raw 0.6
    would send every post to review). A precision the head never reaches puts that threshold
    at 1.0 (that action never fires on its own); so does one reached only by fewer than
    ``min_support`` validation posts (a few lucky top scores are not evidence)."""
    import numpy as np
    from sklearn.metrics import precision_recall_curve

    y, p = np.asarray(y), np.asarray(p, np.float64)
    if not 0 < y.sum() < len(y):
        return HeadPolicy(1.0, 1.0, 1.0)
    base = float(y.mean())
    prec, _, thr = precision_recall_curve(y, p)
    prec = prec[:-1]  # prec[i] is the precision of p >= thr[i]
    support = len(p) - np.searchsorted(np.sort(p), thr, side="left")  # rows with p >= thr[i]
    prec = np.where(support >= min(min_support, len(p)), prec, 0.0)

    def at(share: float, floor: float = 0.0) -> float:
        ok = np.nonzero(prec >= max(base + share * (1 - base), floor))[0]
        return float(thr[ok[0]]) if len(ok) else 1.0

    t_remove = at(remove, 0.9)
    t_review = min(at(review), t_remove)
    t_demote = min(at(demote), t_review)
    return HeadPolicy(round(t_remove, 4), round(t_review, 4), round(t_demote, 4))
