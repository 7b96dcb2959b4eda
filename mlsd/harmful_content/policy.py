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
