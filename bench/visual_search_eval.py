"""Visual search evaluation on Fashion-MNIST, the anchors' protocol, one table.

Catalogue = the 10,000 test images; each queries the other 9,999; relevant = same class; full
sort by cosine, ties to the lower index. Rows: (a) raw pixels centred on the train mean,
(b) ImageNet EfficientNet-Lite0 used as is (224 px, (x-127)/128), (c) our encoder trained
self-supervised without labels, (c') the same encoder served as int8 ONNX, (d) our encoder
trained with label positives.

    python -m bench.visual_search_eval            # reads the latest artifacts
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from mlsd.artifacts import ArtifactError, ArtifactStore
from mlsd.data import fashion_mnist as fm
from mlsd.image import images_to_tensor
from mlsd.retrieval_eval import evaluate_embeddings
from mlsd.runtime import OnnxRunner

COLUMNS = ("MRR", "P@10", "R@10", "mAP@10", "nDCG@10")


def efficientnet_embeddings(x: torch.Tensor, batch: int = 200) -> np.ndarray:
    """ImageNet EfficientNet-Lite0 pooled features at 224 px, run through onnxruntime (the
    export matches eager torch to ~1e-7 and runs several times faster on CPU)."""
    import tempfile

    from mlsd.models.encoder import EfficientNetLite0Encoder
    from mlsd.runtime import export_onnx

    model = EfficientNetLite0Encoder(image_size=224).eval()
    with tempfile.TemporaryDirectory() as d:
        path = export_onnx(model, x[:2], f"{d}/efficientnet_lite0.onnx")
        runner = OnnxRunner(path)
        with torch.inference_mode():
            ref = model(x[:8]).numpy()
        out = np.concatenate(
            [runner.run(x[i : i + batch].numpy()) for i in range(0, len(x), batch)]
        )
    assert np.abs(out[:8] - ref).max() < 1e-4, "ONNX export diverged from torch"
    return out


def artifact_rows(store: ArtifactStore, name: str, label: str, x: torch.Tensor, with_int8: bool):
    try:
        art = store.load(name)
    except ArtifactError as e:
        print(f"skipping {label}: {e}")
        return []
    # the served fp32 ONNX model (its parity with torch is checked when the artifact is built)
    fp32 = OnnxRunner(art.file("encoder.onnx"))
    emb = np.concatenate([fp32.run(x[i : i + 500].numpy()) for i in range(0, len(x), 500)])
    tr = art.config.get("train", {})
    desc = (
        f"{label} [{name}/{art.version}; positives={tr.get('positives')}, "
        f"epochs={tr.get('epochs')}]"
    )
    rows = [(desc, emb)]
    if art.config.get("encoder", {}).get("arch") == "fusion":  # what each half brings
        from mlsd.visual_search import load_encoder_module

        with torch.inference_mode():
            cnn = load_encoder_module(art).ours(x).numpy()
        rows.append((f"{label}: our CNN alone (without the ImageNet half)", cnn))
    if with_int8:
        int8 = OnnxRunner(art.file("encoder.int8.onnx"))
        out = np.concatenate([int8.run(x[i : i + 500].numpy()) for i in range(0, len(x), 500)])
        rows.append((f"{label}, int8 ONNX (compressed)", out))
    return rows


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--store", default="artifacts")
    p.add_argument("--ssl", default="visual_search", help="artifact of (c)")
    p.add_argument("--labels", default="visual_search_labels", help="artifact of (d)")
    p.add_argument("--skip-efficientnet", action="store_true")
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    train, test = fm.load("train"), fm.load("test")
    x = images_to_tensor(test.images)
    mean = train.images.reshape(len(train.images), -1).astype(np.float32).mean(0)
    rows = [("(a) raw pixels, centred on the train mean", test.images.reshape(len(x), -1) - mean)]
    if not a.skip_efficientnet:
        t0 = time.perf_counter()
        rows.append(
            ("(b) EfficientNet-Lite0 (ImageNet), as is, 224 px", efficientnet_embeddings(x))
        )
        print(f"(b) embedded in {time.perf_counter() - t0:.0f} s")
    store = ArtifactStore(a.store)
    rows += artifact_rows(store, a.ssl, "(c) ours, self-supervised, no labels", x, True)
    rows += artifact_rows(store, a.labels, "(d) ours, label positives", x, False)
    results = []
    print("| representation | " + " | ".join(COLUMNS) + " |")
    print("| --- |" + " --- |" * len(COLUMNS))
    for name, emb in rows:
        r = evaluate_embeddings(np.asarray(emb, dtype=np.float32), test.labels)
        results.append({"representation": name, **r})
        print(f"| {name} | " + " | ".join(f"{r[c]:.3f}" for c in COLUMNS) + " |", flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
