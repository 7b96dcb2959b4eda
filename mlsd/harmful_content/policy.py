"""From per-head probabilities to what happens to the post, and which harm drove it.

Each head has its own thresholds (heads are calibrated differently and harms differ in cost):
``p >= remove`` removes; ``review <= p < remove`` is the low-confidence band a person looks
at (the book's human-review loop); ``demote <= p < review`` demotes (less distribution, no
removal); below ``demote`` the head does not object. The post takes the most severe action any
head asks for; ``reasons`` are the heads that asked for it, most confident first. A threshold
of 1.0 never fires.

**A platform's policy** (:func:`fit_platform_policy`). The training sets are mostly harmful
(Davidson is 83 % offensive-or-hate); a platform's traffic is mostly benign. So the served
policy does not threshold the model's raw probabilities: each head's scores are calibrated on
validation (Platt scaling) and moved to the platform's prevalence by Bayes' rule (the odds
scale by the prior's odds ratio), and the thresholds are chosen on validation rows reweighted
to that prevalence for what the operator states: a removal precision (each head removes on its
own only where it reaches it, with enough support) and a review capacity (one review threshold
on the common calibrated scale, the lowest that keeps the review share within capacity, never
below ``review_min``). What cannot be met is said in the report's notes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import precision_recall_curve

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
        if p >= self.remove and self.remove < 1.0:
            return "remove"
        if p >= self.review and self.review < 1.0:
            return "review"
        if p >= self.demote and self.demote < 1.0:
            return "demote"
        return "allow"


@dataclass
class Decision:
    action: str
    reasons: list[str]
    scores: dict[str, float]


@dataclass(frozen=True)
class Calibration:
    """One head's Platt scaling, fitted on validation: ``q = sigmoid(a * logit(p) + b)`` is
    the probability of harm at the validation set's ``base_rate``; :meth:`at` moves it to
    another prevalence."""

    a: float = 1.0
    b: float = 0.0
    base_rate: float = 0.5

    def at(self, p: np.ndarray, prevalence: float | None) -> np.ndarray:
        """Raw probabilities -> the probability of harm on a platform of ``prevalence``
        (None: the validation set's own)."""
        z = self.a * _logit(np.asarray(p, np.float64)) + self.b
        if prevalence is not None:
            z = z + _logit(prevalence) - _logit(self.base_rate)
        return 1.0 / (1.0 + np.exp(-z))


@dataclass
class Policy:
    heads: dict[str, HeadPolicy] = field(default_factory=dict)
    default: HeadPolicy = field(default_factory=HeadPolicy)
    # a platform's policy: each head's calibration and prevalence (none: raw probabilities)
    calibration: dict[str, Calibration] = field(default_factory=dict)
    prevalence: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict | None) -> Policy:
        d = dict(d or {})
        default = HeadPolicy(**d.pop("default", {}))
        return cls({h: HeadPolicy(**t) for h, t in d.items()}, default)

    def platform_scores(self, scores: dict[str, float]) -> dict[str, float]:
        """The model's probabilities -> each head's probability of harm on the platform."""
        out = {}
        for h, p in scores.items():
            c = self.calibration.get(h)
            out[h] = float(c.at(p, self.prevalence.get(h))) if c is not None else float(p)
        return out

    def decide(self, scores: dict[str, float]) -> Decision:
        """The model's probabilities -> the action; the decision's scores are the platform's
        probabilities the thresholds were applied to."""
        q = self.platform_scores(scores)
        per = {h: self.heads.get(h, self.default).action(p) for h, p in q.items()}
        worst = max(per.values(), key=ACTIONS.index, default="allow")
        reasons = (
            []
            if worst == "allow"
            else sorted((h for h, a in per.items() if a == worst), key=lambda h: -q[h])
        )
        return Decision(worst, reasons, q)

    def to_dict(self) -> dict:
        return {
            "thresholds": {h: asdict(t) for h, t in self.heads.items()},
            "calibration": {h: asdict(c) for h, c in self.calibration.items()},
            "prevalence": dict(self.prevalence),
        }


def language_rule(
    decision: Decision, lang: str | None, languages: list[str], rule: str
) -> list[str]:
    """A post in a language the model was not trained on is never a silent guess: it is
    scored and the answer says so (``rule`` "score": the multilingual text encoder transfers
    in part), or it goes to review (``rule`` "review"; a post the scores would remove is still
    removed). -> the notes for the answer; ``decision`` is changed in place."""
    if not lang or not languages or lang in languages:
        return []
    trained = ", ".join(languages)
    if rule == "review" and decision.action in ("allow", "demote"):
        decision.action, decision.reasons = "review", ["unseen_language"]
        return [
            f"lang {lang!r} is not one the model was trained on ({trained}): sent to review "
            "by rule (unseen_language: review)"
        ]
    return [
        f"lang {lang!r} is not one the model was trained on ({trained}): scored by the "
        "multilingual text encoder, which transfers only in part"
    ]


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


# -- a platform's policy -------------------------------------------------------------------------


def _logit(p):
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return np.log(p) - np.log1p(-p)


@dataclass(frozen=True)
class PolicyTargets:
    """What an operator states about their platform (``policy_targets:`` in the serve config).

    ``prevalence``: the share of the platform's posts that are harmful, per head (one figure
    for every head, ``head_prevalence`` for the ones that differ); ``removal_precision``: of
    the posts removed without a person, the share that must be harmful; ``review_capacity``:
    the share of posts people can review; ``review_min``: no review below this probability of
    harm (a review is a person's time); ``demote``: demote from this probability (None: no
    demotion band)."""

    prevalence: float = 0.05
    head_prevalence: dict[str, float] = field(default_factory=dict)
    removal_precision: float = 0.9
    review_capacity: float = 0.05
    review_min: float = 0.2
    demote: float | None = None
    min_support: int = 20

    def __post_init__(self):
        for name in ("prevalence", "removal_precision", "review_capacity", "review_min"):
            v = getattr(self, name)
            if not 0.0 < v < 1.0:
                raise ValueError(f"policy target {name} must be in (0, 1), not {v}")
        for h, v in self.head_prevalence.items():
            if not 0.0 < v < 1.0:
                raise ValueError(f"head_prevalence[{h!r}] must be in (0, 1), not {v}")
        if self.demote is not None and not 0.0 < self.demote <= 1.0:
            raise ValueError(f"policy target demote must be in (0, 1], not {self.demote}")

    def of(self, head: str) -> float:
        return float(self.head_prevalence.get(head, self.prevalence))


@dataclass
class ValidationScores:
    """The model's validation probabilities and labels, kept in the artifact so the served
    policy can be fitted to any platform's targets without retraining."""

    heads: list[str]
    probs: np.ndarray  # (N, H) raw probabilities
    labels: np.ndarray  # (N, H) 1 / 0, NaN where the post does not carry the head

    def save(self, path) -> None:
        np.savez_compressed(
            path,
            heads=np.array(self.heads),
            probs=self.probs.astype(np.float32),
            labels=self.labels.astype(np.float32),
        )

    @classmethod
    def load(cls, path) -> ValidationScores:
        with np.load(path, allow_pickle=False) as f:
            return cls([str(h) for h in f["heads"]], f["probs"], f["labels"])

    def harmful(self) -> np.ndarray:
        """(N,) a post is harmful when any head it carries says so."""
        return np.nan_to_num(self.labels, nan=0.0).max(axis=1) > 0


@dataclass
class PolicyReport:
    """What the fitted policy expects on validation reweighted to the platform's prevalence,
    and what it could not meet."""

    targets: dict
    review_threshold: float
    expected: dict  # allowed benign share, removal precision, review share, ...
    heads: dict  # per head: remove threshold, precision, share of decisions it drives
    notes: list[str]


def fit_calibration(y: np.ndarray, p: np.ndarray) -> Calibration:
    """Platt scaling of one head on its validation rows (identity without both classes)."""

    y, p = np.asarray(y), np.asarray(p, np.float64)
    if len(y) == 0 or not 0 < y.sum() < len(y):
        return Calibration(1.0, 0.0, float(y.mean()) if len(y) else 0.5)
    lr = LogisticRegression(C=100.0).fit(_logit(p)[:, None], y.astype(int))
    return Calibration(float(lr.coef_[0, 0]), float(lr.intercept_[0]), float(y.mean()))


def prior_weights(y: np.ndarray, prevalence: float) -> np.ndarray:
    """Weights that make labelled rows look like a platform of ``prevalence``."""
    base = float(np.mean(y))
    if not 0 < base < 1:
        return np.ones(len(y))
    return np.where(y > 0, prevalence / base, (1 - prevalence) / (1 - base))


def _lowest_precise(
    q: np.ndarray, y: np.ndarray, prevalence: float, target: float, min_support: int
) -> tuple[float, float]:
    """The lowest threshold whose precision over ``q >= t`` on a platform of ``prevalence``
    reaches ``target``, with at least ``min_support`` rows above it -> (threshold, that
    precision); (1.0, the best seen) when none does. Precision at a prevalence is
    ``prevalence * TPR / (prevalence * TPR + (1 - prevalence) * FPR)``, and the false-positive
    rate counts one benign post more than were seen above the threshold: at a low prevalence
    every benign row weighs heavily, and a few lucky top scores (no benign row among them by
    chance) must not certify a head that barely separates the classes."""
    order = np.argsort(-q, kind="stable")
    qs, ys = q[order], y[order]
    n_pos, n_neg = max(ys.sum(), 1.0), float(len(ys) - ys.sum())
    tpr = np.cumsum(ys) / n_pos
    fpr = (np.cumsum(1 - ys) + 1) / (n_neg + 1)
    prec = prevalence * tpr / (prevalence * tpr + (1 - prevalence) * fpr)
    considered = np.r_[qs[1:] != qs[:-1], True] & (np.arange(len(qs)) + 1 >= min_support)
    ok = considered & (prec >= target)  # a threshold takes every row tied with it
    if not ok.any():
        seen = prec[considered]
        return 1.0, float(seen.max()) if len(seen) else 0.0
    k = int(np.nonzero(ok)[0][-1])
    return float(qs[k]), float(prec[k])


def fit_platform_policy(
    val: ValidationScores, targets: PolicyTargets
) -> tuple[Policy, PolicyReport]:
    """Calibrate every head, then choose the thresholds for the platform (module doc)."""
    H = len(val.heads)
    cal, q = {}, np.zeros_like(val.probs, dtype=np.float64)
    prevalence = {h: targets.of(h) for h in val.heads}
    remove, head_info, notes, silent = {}, {}, [], set()
    harmful = val.harmful()
    for j, h in enumerate(val.heads):
        carried = ~np.isnan(val.labels[:, j])
        y = val.labels[carried, j]
        cal[h] = fit_calibration(y, val.probs[carried, j])
        q[:, j] = cal[h].at(val.probs[:, j], prevalence[h])
        if not 0 < y.sum() < len(y):  # no evidence of what its scores mean: it does not act
            remove[h], precision = 1.0, 0.0
            silent.add(h)
            q[:, j] = 0.0
            notes.append(f"{h}: no validation posts with both labels: it does not act")
            head_info[h] = {"validation_rows": int(carried.sum()), "acts": False}
            continue
        # a removal is right when the post is harmful by whatever its own labels say: every
        # validation post counts, so a head that removes benign posts of another data set
        # (text it was not trained on) pays for them here
        remove[h], precision = _lowest_precise(
            q[:, j],
            harmful.astype(float),
            targets.prevalence,
            targets.removal_precision,
            targets.min_support,
        )
        head_info[h] = {
            "acts": True,
            "remove": round(remove[h], 4),
            "validation_rows": int(carried.sum()),
            "base_rate": round(cal[h].base_rate, 4),
            "removal_precision": round(precision, 3),
        }
        if remove[h] >= 1.0:
            notes.append(
                f"{h}: never removes on its own (its best removal precision at "
                f"prevalence {targets.prevalence:g} is {precision:.2f}, under the target "
                f"{targets.removal_precision:g}); it can still send posts to review"
            )
    # the review threshold, common to every head on the calibrated scale, for the capacity
    w_post = prior_weights(harmful.astype(float), targets.prevalence)
    removed = np.zeros(len(q), bool)
    for j, h in enumerate(val.heads):
        if remove[h] < 1.0:
            removed |= q[:, j] >= remove[h]
    top = q.max(axis=1) if H else np.zeros(len(q))
    total = w_post.sum()
    candidates = np.unique(np.r_[top[top >= targets.review_min], targets.review_min])
    t_review = 1.0
    for t in candidates:  # ascending: the first within capacity is the lowest
        share = w_post[(top >= t) & ~removed].sum() / total
        if share <= targets.review_capacity:
            t_review = float(t)
            break
    if t_review > targets.review_min:
        notes.append(
            f"review starts at a probability of harm of {t_review:.2f}, above "
            f"review_min {targets.review_min:g}, to stay within the review capacity "
            f"{targets.review_capacity:g}"
        )
    demote = targets.demote if targets.demote is not None else t_review
    heads = {
        h: HeadPolicy(1.0, 1.0, 1.0)
        if h in silent
        else HeadPolicy(
            round(min(remove[h], 1.0), 6),
            round(min(t_review, remove[h]), 6),
            round(min(demote, t_review, remove[h]), 6),
        )
        for h in val.heads
    }
    policy = Policy(heads, HeadPolicy(1.0, 1.0, 1.0), cal, prevalence)
    expected = outcome_shares(policy, val.heads, val.probs, harmful, w_post)
    for h in val.heads:
        head_info[h]["drives"] = expected["drives"].get(h, 0.0)
    report = PolicyReport(
        asdict(targets),
        round(t_review, 4),
        {k: v for k, v in expected.items() if k != "drives"},
        head_info,
        notes,
    )
    return policy, report


def outcome_shares(
    policy: Policy,
    heads: list[str],
    probs: np.ndarray,
    harmful: np.ndarray,
    weights: np.ndarray | None = None,
) -> dict:
    """What a policy does to labelled posts (weighted, e.g. to a platform's prevalence): the
    share of benign posts allowed, removal precision, the shares removed / reviewed /
    demoted, and the share of decisions (not allow) each head drives (its first reason)."""
    w = np.ones(len(probs)) if weights is None else np.asarray(weights, np.float64)
    actions, first = [], []
    for row in probs:
        d = policy.decide(dict(zip(heads, map(float, row), strict=True)))
        actions.append(d.action)
        first.append(d.reasons[0] if d.reasons else None)
    a = np.array(actions)
    benign = ~np.asarray(harmful, bool)
    removed = a == "remove"
    flagged = a != "allow"

    def share(mask: np.ndarray, within: np.ndarray | None = None) -> float:
        base = w if within is None else w * within
        return round(float((base * mask).sum() / max(base.sum(), 1e-12)), 4)

    drives = {}
    for h in heads:
        mask = np.array([f == h for f in first]) & flagged
        drives[h] = round(float((w * mask).sum() / max((w * flagged).sum(), 1e-12)), 4)
    precision = (
        float((w * removed * ~benign).sum() / (w * removed).sum()) if removed.any() else None
    )
    return {
        "benign_allowed": share(a == "allow", benign),
        "harmful_caught": share(flagged, ~benign),
        "removal_precision": None if precision is None else round(precision, 4),
        "removed": share(removed),
        "review": share(a == "review"),
        "demoted": share(a == "demote"),
        "drives": drives,
    }
