"""Harmful content: what the served policy does to a platform's posts, today's thresholds
against the platform policy (calibrated, fitted for a prevalence, a review capacity and a
removal precision), on held-out test rows reweighted to the platform's prevalence.

    python -m bench.harmful_policy [--ours harmful_content] [--prevalence 0.05]
        [--review-capacity 0.05] [--removal-precision 0.9]

Rows: Davidson's and MLMA en / fr / ar test splits (never used to fit anything). A post is
harmful when any head it carries says so. Reweighting: harmful posts weigh prevalence / (their
share), benign ones (1 - prevalence) / (their share), so the shares below are what a platform
whose traffic is ``prevalence`` harmful would see from posts like these. The platform policy
is fitted on the artifact's validation scores only (``mlsd.harmful_content.policy``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from bench.harmful_content_eval import _ours
from mlsd.artifacts import ArtifactStore
from mlsd.harmful_content import data as D
from mlsd.harmful_content.artifact import load_policy
from mlsd.harmful_content.policy import Policy, PolicyTargets, outcome_shares, prior_weights

SETS = {
    "davidson/en": ("davidson", "en"),
    "mlma/en": ("mlma", "en"),
    "mlma/fr": ("mlma", "fr"),
    "mlma/ar": ("mlma", "ar"),
}


def _labels(posts, heads) -> np.ndarray:
    y, m = D.label_matrix(posts, tuple(heads))
    return np.where(m, y, np.nan)


def _head_rows(policy: Policy, heads, probs, labels, harmful, w) -> dict:
    """Per head: AUROC on the test rows that carry it, and the precision of the removals the
    head makes among all test posts (right when the post is harmful by its own labels),
    weighted by ``w``."""

    out = {}
    for j, h in enumerate(heads):
        carried = ~np.isnan(labels[:, j])
        y = labels[carried, j]
        if not 0 < y.sum() < len(y):
            continue
        c = policy.calibration.get(h)
        q = c.at(probs[:, j], policy.prevalence.get(h)) if c is not None else probs[:, j]
        t = policy.heads.get(h, policy.default).remove
        removed = (q >= t) & (t < 1.0)
        prec = float((w * removed * harmful).sum() / (w * removed).sum()) if removed.any() else None
        out[h] = {
            "rows": int(carried.sum()),
            "auroc": round(float(roc_auc_score(y, probs[carried, j])), 3),
            "removes_at": round(t, 3),
            "removes": int(removed.sum()),
            "removal_precision": prec,
        }
    return out


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--store", default="artifacts")
    p.add_argument("--ours", default="harmful_content")
    p.add_argument("--prevalence", type=float, default=0.05)
    p.add_argument("--review-capacity", type=float, default=0.05)
    p.add_argument("--removal-precision", type=float, default=0.9)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="var/bench/harmful_policy.json")
    a = p.parse_args(argv)

    tests = {
        k: (D.davidson("test") if src == "davidson" else D.mlma(lang, "test"))
        for k, (src, lang) in SETS.items()
    }
    scored, label = _ours(a.store, a.ours, tests, a.threads)
    name, _, version = a.ours.partition("/")
    art = ArtifactStore(a.store).load(name, version or "latest")
    heads = scored[next(iter(scored))][1]
    probs = np.concatenate([scored[k][0] for k in SETS])
    labels = np.concatenate([_labels(tests[k], heads) for k in SETS])
    source = np.concatenate([[k] * len(tests[k]) for k in SETS])
    harmful = np.nan_to_num(labels, nan=0.0).max(axis=1) > 0
    targets = PolicyTargets(
        prevalence=a.prevalence,
        review_capacity=a.review_capacity,
        removal_precision=a.removal_precision,
    )
    platform, report = load_policy(art, targets)
    if report is None:
        raise SystemExit(f"{label} has no validation scores: retrain it to fit a policy")
    today = Policy.from_dict(art.config.get("policy") or {})
    w = prior_weights(harmful.astype(float), a.prevalence)
    out = {
        "model": label,
        "targets": report.targets,
        "review_threshold": report.review_threshold,
        "test_posts": int(len(probs)),
        "test_harmful_share": round(float(harmful.mean()), 3),
        "notes": report.notes,
        "validation_expected": report.expected,
    }
    for pname, pol in (("today", today), ("platform", platform)):
        res = {
            "at_prevalence": outcome_shares(pol, heads, probs, harmful, w),
            "as_is": outcome_shares(pol, heads, probs, harmful),
            "heads": _head_rows(pol, heads, probs, labels, harmful, w),
        }
        res["benign_allowed_by_set"] = {
            k: outcome_shares(pol, heads, probs[source == k], harmful[source == k])[
                "benign_allowed"
            ]
            for k in SETS
        }
        out[pname] = res
    _print(out, heads)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=2, default=float))
    return out


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)


def _print(out: dict, heads) -> None:
    t = out["targets"]
    print(
        f"\n{out['model']}: {out['test_posts']} test posts ({out['test_harmful_share']:.0%} "
        f"harmful), reweighted to prevalence {t['prevalence']:g}; review capacity "
        f"{t['review_capacity']:g}, removal precision target {t['removal_precision']:g}\n"
    )
    keys = ("benign_allowed", "harmful_caught", "removal_precision", "removed", "review", "demoted")
    print("| policy | " + " | ".join(keys) + " |")
    print("| --- " * (len(keys) + 1) + "|")
    for pname in ("today", "platform"):
        for view in ("at_prevalence", "as_is"):
            r = out[pname][view]
            print(
                f"| {pname} ({view.replace('_', ' ')}) | "
                + " | ".join(_fmt(r[k]) for k in keys)
                + " |"
            )
    print(
        "\nbenign allowed per test set (as is): "
        + ", ".join(
            f"{k} today {_fmt(out['today']['benign_allowed_by_set'][k])} / platform "
            f"{_fmt(out['platform']['benign_allowed_by_set'][k])}"
            for k in SETS
        )
    )
    print(
        "\n| head | test rows | AUROC | removes at (platform q) | its removals' precision at "
        "prevalence | share of decisions it drives (today / platform) |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    for h in heads:
        r = out["platform"]["heads"].get(h)
        if r is None:
            continue
        drives = (
            out["today"]["at_prevalence"]["drives"][h],
            out["platform"]["at_prevalence"]["drives"][h],
        )
        print(
            f"| {h} | {r['rows']} | {r['auroc']:.3f} | {r['removes_at']:.3f} | "
            f"{_fmt(r['removal_precision'])} | {drives[0]:.3f} / {drives[1]:.3f} |"
        )
    print("\nreview starts at q >= " + f"{out['review_threshold']:.3f}")
    for n in out["notes"]:
        print(f"- {n}")


if __name__ == "__main__":
    main()
