"""Offline evaluation of an embedding for retrieval, with the anchors' protocol.

Catalogue = the given items; each item queries all the others; relevant = same label; full sort
by cosine, ties to the lower index (stable sort). Reports MRR (no cut-off), P@k, R@k, mAP@k and
nDCG@k (binary gains).
"""

from __future__ import annotations

import tempfile

import numpy as np
import torch

from mlsd.backbones import EfficientNetLite0Encoder
from mlsd.metrics import ranking_report
from mlsd.runtime import export_onnx, make_runner


def leave_one_out_ranking(
    emb: np.ndarray, labels: np.ndarray, k: int = 10, chunk: int = 500
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (rel (N, k), n_relevant (N,), first_rank (N,)) for every item as a query."""
    x = torch.as_tensor(np.asarray(emb, dtype=np.float32))
    x = torch.nn.functional.normalize(x, dim=1)
    lab = torch.as_tensor(np.asarray(labels))
    n = len(x)
    counts = torch.bincount(lab) if lab.min() >= 0 else None
    rel = np.zeros((n, k), dtype=np.float64)
    n_rel = np.zeros(n, dtype=np.int64)
    first = np.zeros(n, dtype=np.int64)
    for s in range(0, n, chunk):
        q = x[s : s + chunk]
        scores = q @ x.T  # (c, N)
        rows = torch.arange(len(q))
        scores[rows, rows + s] = -torch.inf  # a query never retrieves itself
        order = torch.sort(-scores, dim=1, stable=True).indices  # ties -> lower index
        same = lab[order] == lab[s : s + len(q), None]  # (c, N) in rank order
        same[:, -1] = False  # the last slot is the query itself (-inf)
        rel[s : s + len(q)] = same[:, :k].numpy()
        has = same.any(dim=1)
        first[s : s + len(q)] = torch.where(has, same.float().argmax(dim=1) + 1, 0).numpy()
        if counts is not None:
            n_rel[s : s + len(q)] = (counts[lab[s : s + len(q)]] - 1).numpy()
        else:
            n_rel[s : s + len(q)] = same.sum(dim=1).numpy()
    return rel, n_rel, first


def evaluate_embeddings(emb: np.ndarray, labels: np.ndarray, k: int = 10) -> dict[str, float]:
    rel, n_rel, first = leave_one_out_ranking(emb, labels, k=k)
    return ranking_report(rel, n_rel, k=k, first_rank=first)


def efficientnet_embeddings(x: torch.Tensor, batch: int = 200) -> np.ndarray:
    """ImageNet EfficientNet-Lite0 pooled features at 224 px, run through onnxruntime (the
    export matches eager torch to ~1e-7 and runs several times faster on CPU)."""

    model = EfficientNetLite0Encoder(image_size=224).eval()
    with tempfile.TemporaryDirectory() as d:
        path = export_onnx(model, x[:2], f"{d}/efficientnet_lite0.onnx")
        runner = make_runner("onnx", path=path)
        with torch.inference_mode():
            ref = model(x[:8]).numpy()
        out = np.concatenate(
            [runner.run(x[i : i + batch].numpy()) for i in range(0, len(x), batch)]
        )
    assert np.abs(out[:8] - ref).max() < 1e-4, "ONNX export diverged from torch"
    return out


def protocol_table(
    rows: list[tuple[str, np.ndarray]], labels: np.ndarray, k: int = 10
) -> list[dict]:
    """Every representation through the anchors' protocol (leave-one-out, same class)."""
    return [
        {"representation": name, **evaluate_embeddings(np.asarray(emb, np.float32), labels, k)}
        for name, emb in rows
    ]
