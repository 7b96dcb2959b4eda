"""Offline evaluation: AUROC and AUPRC per head and language (the book's offline metrics), the
minority class's AUPRC where the positive class is the majority, and the baselines our model
is judged against, fitted on the same training rows (``../shared/ANCHORS.md``'s protocol).

Baselines: TF-IDF (word 1-2 + char 2-5 grams) + logistic regression (C by 5-fold CV on the
training rows), frozen multilingual sentence vectors + logistic regression, and the two
zero-shot tools that ship in packages (``alt-profanity-check``, ``hatesonar``; both saw
Davidson in their own training, which flatters their Davidson figures).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy.sparse import hstack
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegressionCV
from sklearn.metrics import (
    average_precision_score,
    precision_recall_curve,
    roc_auc_score,
    roc_curve,
)


def auroc(y: np.ndarray, s: np.ndarray) -> float:

    y = np.asarray(y)
    return float(roc_auc_score(y, s)) if 0 < y.sum() < len(y) else float("nan")


def auprc(y: np.ndarray, s: np.ndarray) -> float:
    """Average precision (sklearn's step-wise AUPRC) of the positive class."""

    y = np.asarray(y)
    return float(average_precision_score(y, s)) if 0 < y.sum() < len(y) else float("nan")


def minority_auprc(y: np.ndarray, s: np.ndarray) -> float:
    """AUPRC of whichever class is rarer (the negatives scored by -s when they are): where 83 %
    of rows are positive, the positive AUPRC is near 1 for anything."""
    y = np.asarray(y)
    if y.mean() <= 0.5:
        return auprc(y, s)
    return auprc(1 - y, -np.asarray(s))


def scores_row(y: np.ndarray, s: np.ndarray) -> dict:
    y = np.asarray(y).astype(int)
    return {
        "n": int(len(y)),
        "positive_share": float(y.mean()) if len(y) else float("nan"),
        "auroc": auroc(y, s),
        "auprc": auprc(y, s),
        "minority_auprc": minority_auprc(y, s),
    }


class TfidfLR:
    """TF-IDF word 1-2 + char 2-5 grams -> logistic regression, C chosen by 5-fold CV."""

    name = "tfidf_lr"

    def __init__(self, cs: Sequence[float] = (0.25, 1.0, 4.0, 16.0), seed: int = 0):
        self.cs, self.seed = tuple(cs), seed

    def fit(self, texts: Sequence[str], y: np.ndarray) -> TfidfLR:

        self.word = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)
        self.char = TfidfVectorizer(
            analyzer="char_wb",
            ngram_range=(2, 5),
            min_df=2,
            sublinear_tf=True,
            max_features=200_000,
        )
        x = hstack([self.word.fit_transform(texts), self.char.fit_transform(texts)]).tocsr()
        self.lr = LogisticRegressionCV(
            Cs=list(self.cs), cv=5, scoring="roc_auc", max_iter=2000, random_state=self.seed
        )
        self.lr.fit(x, np.asarray(y).astype(int))
        return self

    def score(self, texts: Sequence[str]) -> np.ndarray:

        x = hstack([self.word.transform(texts), self.char.transform(texts)]).tocsr()
        return self.lr.predict_proba(x)[:, 1]


class EmbeddingLR:
    """Frozen sentence vectors -> logistic regression (C by 5-fold CV)."""

    def __init__(self, name: str = "embedding_lr", cs: Sequence[float] = (0.25, 1.0, 4.0, 16.0)):
        self.name, self.cs = name, tuple(cs)

    def fit(self, x: np.ndarray, y: np.ndarray) -> EmbeddingLR:

        self.lr = LogisticRegressionCV(Cs=list(self.cs), cv=5, scoring="roc_auc", max_iter=2000)
        self.lr.fit(x, np.asarray(y).astype(int))
        return self

    def score(self, x: np.ndarray) -> np.ndarray:
        return self.lr.predict_proba(x)[:, 1]


def profanity_check_scores(texts: Sequence[str]) -> np.ndarray:
    """alt-profanity-check's p(offensive) (a linear SVM over Davidson + other tweets)."""
    from profanity_check import predict_prob

    return np.asarray(predict_prob(list(texts)), np.float64)


def hatesonar_scores(texts: Sequence[str], batch_size: int = 512) -> dict[str, np.ndarray]:
    """hatesonar's class probabilities: ``hate`` = p(hate speech), ``offensive`` =
    1 - p(neither). Its ONNX graph lower-cases text in the ``en_US.UTF-8`` locale, which slim
    hosts lack: the graph is loaded with ``C.UTF-8`` set on that node instead (same bytes
    otherwise), and run in batches through onnxruntime."""

    import onnx
    import onnxruntime as ort

    spec = importlib.util.find_spec("hatesonar")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("hatesonar is not installed (pip install hatesonar)")
    model = onnx.load(str(Path(spec.origin).parent / "model" / "model.onnx"))
    for node in model.graph.node:
        if node.op_type == "StringNormalizer":
            kept = [a for a in node.attribute if a.name != "locale"]
            del node.attribute[:]
            node.attribute.extend(kept + [onnx.helper.make_attribute("locale", "C.UTF-8")])
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    probs = []
    for s in range(0, len(texts), batch_size):
        _, p = sess.run(None, {"text": np.array(list(texts[s : s + batch_size]), dtype=object)})
        probs.append(
            np.asarray(
                [[row[k] for k in (0, 1, 2)] for row in p] if isinstance(p, list) else p, np.float64
            )
        )
    p = np.concatenate(probs) if probs else np.zeros((0, 3))
    return {"hate": p[:, 0], "offensive": 1 - p[:, 2]}


def plot_curves(curves: dict[str, tuple[np.ndarray, np.ndarray]], title: str, path) -> None:
    """ROC and PR curves of several scorers of one head / language, side by side, as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (roc_ax, pr_ax) = plt.subplots(1, 2, figsize=(10, 4.2))
    for name, (y, s) in curves.items():
        if not 0 < np.sum(y) < len(y):
            continue
        fpr, tpr, _ = roc_curve(y, s)
        p, r, _ = precision_recall_curve(y, s)
        roc_ax.plot(fpr, tpr, label=f"{name} ({auroc(y, s):.3f})")
        pr_ax.plot(r, p, label=f"{name} ({auprc(y, s):.3f})")
    roc_ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    roc_ax.set(xlabel="false positive rate", ylabel="true positive rate", title=f"ROC: {title}")
    pr_ax.set(xlabel="recall", ylabel="precision", title=f"PR: {title}")
    for ax in (roc_ax, pr_ax):
        ax.legend(fontsize=7, loc="lower right" if ax is roc_ax else "lower left")
        ax.grid(alpha=0.3)
    fig.tight_layout()

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
