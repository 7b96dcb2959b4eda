"""Harmful content: our multi-task model side by side with the baselines, per head and language.

    python -m bench.harmful_content_eval [--ours harmful_content] [--transfer harmful_content_en]

Test rows: Davidson's and MLMA's (per language) test splits (``mlsd.harmful_content.data``: the
anchors' protocol). Baselines fitted on the same training rows, per head and language:
TF-IDF (word 1-2 + char 2-5) + LR and frozen sentence vectors + LR (C by 5-fold CV); beside
them the zero-shot tools (alt-profanity-check; hatesonar, both of which saw Davidson in their
own training). Rows: AUROC, AUPRC and the minority class's AUPRC. Cross-lingual transfer: an
English-only model (``--transfer``, trained with ``--langs en``) and an English-only TF-IDF /
embedding LR, tested on French and Arabic. ROC + PR curves: docs/plots/harmful_<head>_<lang>.png.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from mlsd.artifacts import ArtifactStore
from mlsd.harmful_content import data as D
from mlsd.harmful_content import evaluation as E
from mlsd.harmful_content import features as F
from mlsd.harmful_content import pipeline as P
from mlsd.harmful_content.artifact import load_bag, load_classifier

# (head, language) pairs the baselines are fitted for; ours is scored on all of its heads
MAIN = [("hate", "en"), ("offensive", "en"), ("hostile", "en"), ("hostile", "fr"),
        ("hostile", "ar")]  # fmt: skip


def _rows(posts, head):
    sel = [p for p in posts if head in p.labels]
    return [p.text for p in sel], np.array([p.labels[head] for p in sel]), sel


def _ours(store, name, tests, threads):

    name, _, version = name.partition("/")  # "name" (latest) or "name/version"
    art = ArtifactStore(store).load(name, version or "latest")
    model, cfg = load_classifier(art)
    enc = F.artifact_encoder(art.config, num_threads=threads)
    bag = load_bag(art)
    out = {}
    for key, posts in tests.items():
        x = P.featurize(posts, enc, bag, cfg.spec, "var/cache/harmful_content")
        out[key] = (P.predict(model, x), list(cfg.heads))
    return out, f"{name}/{art.version}"


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--store", default="artifacts")
    p.add_argument("--ours", default="harmful_content")
    p.add_argument("--transfer", default="harmful_content_en", help="an English-only model")
    p.add_argument("--encoders", nargs="*", default=[F.USE_M3], help="frozen vectors + LR")
    p.add_argument(
        "--variants",
        nargs="*",
        default=[],
        help="more of our artifacts (natural labels, late fusion, focal loss, ...) "
        "scored on the same rows, beside --ours",
    )
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--plots", default="docs/plots")
    p.add_argument("--out", default="var/bench/harmful_content_eval.json")
    a = p.parse_args(argv)

    t0 = time.perf_counter()
    train = {"davidson": D.davidson("train")} | {lg: D.mlma(lg, "train") for lg in D.LANGS}
    tests = {"davidson": D.davidson("test")} | {lg: D.mlma(lg, "test") for lg in D.LANGS}
    key_of = {("hate", "en"): "davidson", ("offensive", "en"): "davidson"}
    ours, ours_name = _ours(a.store, a.ours, tests, a.threads)
    encoders = {n: F.TextEncoder(n, num_threads=a.threads) for n in a.encoders}
    cache = "var/cache/harmful_content"
    report: dict = {"ours": ours_name, "rows": []}
    zero = {
        k: {
            "profanity_check": E.profanity_check_scores([q.text for q in v]),
            **{f"hatesonar_{h}": s for h, s in E.hatesonar_scores([q.text for q in v]).items()},
        }
        for k, v in tests.items()
    }
    print(f"harmful content, test rows; ours = {ours_name}\n")
    print(
        f"{'head/lang':18s} {'scorer':28s} {'n':>5s} {'pos':>5s} {'AUROC':>6s} {'AUPRC':>6s} "
        f"{'min.AUPRC':>9s}"
    )
    for head, lang in MAIN:
        key = key_of.get((head, lang), lang)
        tr_text, tr_y, _ = _rows(train[key], head)
        te_text, te_y, _ = _rows(tests[key], head)
        scorers = {}
        probs, heads = ours[key]
        scorers[f"ours ({a.ours})"] = probs[:, heads.index(head)]
        scorers["tfidf + LR"] = E.TfidfLR().fit(tr_text, tr_y).score(te_text)
        for n, enc in encoders.items():
            xtr, xte = F.encode_cached(enc, tr_text, cache), F.encode_cached(enc, te_text, cache)
            scorers[f"{n} + LR"] = E.EmbeddingLR(n).fit(xtr, tr_y).score(xte)
        scorers["alt-profanity-check"] = zero[key]["profanity_check"]
        sonar = "hatesonar_hate" if head == "hate" else "hatesonar_offensive"
        scorers[f"hatesonar ({'p(hate)' if head == 'hate' else '1-p(neither)'})"] = zero[key][sonar]
        for name, s in scorers.items():
            row = E.scores_row(te_y, s) | {"head": head, "lang": lang, "scorer": name}
            report["rows"].append(row)
            print(
                f"{head + '/' + lang:18s} {name:28s} {row['n']:5d} {row['positive_share']:5.2f} "
                f"{row['auroc']:6.3f} {row['auprc']:6.3f} {row['minority_auprc']:9.3f}"
            )
        if a.plots:
            E.plot_curves(
                {n: (te_y, s) for n, s in scorers.items()},
                f"{head} / {lang}",
                Path(a.plots) / f"harmful_{head}_{lang}.png",
            )
        print()
    # ours on every head it has (the MLMA hostility types too)
    print("ours, every head:")
    for key, posts in tests.items():
        probs, heads = ours[key]
        y, m = D.label_matrix(posts, heads)
        for name, row in P.head_scores(posts, heads, probs, y, m).items():
            report.setdefault("ours_all_heads", {})[name] = row
            print(
                f"  {name:22s} AUROC {row['auroc']:.3f}  AUPRC {row['auprc']:.3f}  "
                f"minority {row['minority_auprc']:.3f}  (n={row['n']})"
            )
    # variants of our model on the same test rows (main head / language pairs)
    if a.variants:
        print("\nvariants (AUROC / minority AUPRC):")
    for name in a.variants:
        got, label = _ours(a.store, name, tests, a.threads)
        cells = {}
        for head, lang in MAIN:
            key = key_of.get((head, lang), lang)
            _, te_y, _ = _rows(tests[key], head)
            probs, heads = got[key]
            row = E.scores_row(te_y, probs[:, heads.index(head)])
            cells[f"{head}/{lang}"] = row
        report.setdefault("variants", {})[label] = cells
        print(
            f"  {label:44s} "
            + "  ".join(f"{k} {r['auroc']:.3f}/{r['minority_auprc']:.3f}" for k, r in cells.items())
        )
    # cross-lingual transfer: English-only training, French / Arabic test
    try:
        en_only, en_name = _ours(a.store, a.transfer, tests, a.threads)
    except Exception as e:  # noqa: BLE001 - the transfer model is optional
        en_only, en_name = None, f"skipped ({e})"
    print(f"\ntransfer en -> fr / ar (hostile, AUROC); English-only model: {en_name}")
    tr_text, tr_y, _ = _rows(train["en"], "hostile")
    tfidf = E.TfidfLR().fit(tr_text, tr_y)
    lrs = {
        n: E.EmbeddingLR(n).fit(F.encode_cached(enc, tr_text, cache), tr_y)
        for n, enc in encoders.items()
    }
    for lang in ("fr", "ar"):
        te_text, te_y, _ = _rows(tests[lang], "hostile")
        res = {"tfidf + LR (en)": E.auroc(te_y, tfidf.score(te_text))}
        for n, lr in lrs.items():
            res[f"{n} + LR (en)"] = E.auroc(
                te_y, lr.score(F.encode_cached(encoders[n], te_text, cache))
            )
        if en_only is not None:
            probs, heads = en_only[lang]
            res[f"ours ({a.transfer})"] = E.auroc(te_y, probs[:, heads.index("hostile")])
        report.setdefault("transfer", {})[lang] = res
        print(f"  en -> {lang}: " + ", ".join(f"{k} {v:.3f}" for k, v in res.items()))
    report["seconds"] = time.perf_counter() - t0
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(report, indent=2, default=float))
    return report


if __name__ == "__main__":
    main()
