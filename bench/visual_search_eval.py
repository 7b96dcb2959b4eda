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

from mlsd.artifacts import ArtifactStore
from mlsd.data import fashion_mnist as fm
from mlsd.image import images_to_tensor
from mlsd.visual_search.artifact import artifact_rows
from mlsd.visual_search.evaluation import efficientnet_embeddings, protocol_table

COLUMNS = ("MRR", "P@10", "R@10", "mAP@10", "nDCG@10")


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
    results = protocol_table(rows, test.labels)
    print("| representation | " + " | ".join(COLUMNS) + " |")
    print("| --- |" + " --- |" * len(COLUMNS))
    for r in results:
        print(f"| {r['representation']} | " + " | ".join(f"{r[c]:.3f}" for c in COLUMNS) + " |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
