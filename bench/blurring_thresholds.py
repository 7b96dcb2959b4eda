"""The served blurring set with our detector at its validated thresholds, or at fixed ones:
what a detector trained for a shorter or longer time blurs, on validation and test photos.

    python -m bench.blurring_thresholds --stores artifacts demo=/tmp/demo/store \
        [--fixed face=0.3,plate=0.35]

For each store's ``blurring_fcos`` (int8, as served): the thresholds the validated rule
chooses (``mlsd.blurring.evaluation.validated_thresholds``: per class, the lowest with
FP/image within its bound on that class's validation photos; what ``train.blurring`` writes
into the artifact), or ``--fixed`` ones; then, at long side 1024, our detector alone (AP@0.5,
coverage, FP/image) and the served union with CenterFace int8 (its served threshold) on the
face photos, our detector on the plate photos. FP/image per set, as ``bench.blurring_eval``
counts it.
"""

from __future__ import annotations

import argparse
import json

from mlsd.artifacts import ArtifactStore
from mlsd.blurring import backends as B
from mlsd.blurring import data as D
from mlsd.blurring import evaluation as E
from mlsd.blurring.artifact import CENTERFACE_INT8_SPEC


def _fixed(text: str) -> dict[str, float]:
    pairs = (kv.split("=") for kv in text.split(","))
    return {k.strip(): float(v) for k, v in pairs}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--stores", nargs="+", default=["artifacts"], help="[NAME=]PATH ...")
    p.add_argument("--centerface-store", default="artifacts", help="where centerface_int8 is")
    p.add_argument("--fixed", type=_fixed, default=None, help="face=T,plate=T instead")
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args(argv)
    cf_spec = next(m for m in B.SERVED_MEMBERS if m["kind"] == "centerface")
    cf = B.build_backend(CENTERFACE_INT8_SPEC, ArtifactStore(a.centerface_store), "cpu", a.threads)
    cf_t = {D.FACE: cf_spec["threshold"]["face"]}
    splits = {
        s: {"face": E.at_scale(D.faces(s)), "plate": E.at_scale(D.plates(s))}
        for s in ("val", "test")
    }
    report = {}
    for entry in a.stores:
        name, _, path = entry.rpartition("=")
        name = name or path
        ours = B.build_backend(B.ours_spec("blurring_fcos:onnx-int8"), ArtifactStore(path))
        chosen = a.fixed
        if chosen is None:
            chosen, _ = E.validated_thresholds(ours, splits["val"])  # as train.blurring does
        t = {D.FACE: chosen["face"], D.PLATE: chosen["plate"]}
        rows = {"thresholds": chosen}
        for split, sets in splits.items():
            for cls, images in sets.items():
                label = D.FACE if cls == "face" else D.PLATE
                found, _ = E.run_detector(ours, images)
                c = E.coverage_stats(found, t, label=label)
                row = {
                    "ap50": E.ap(found, label),
                    "coverage": c["coverage"],
                    "fp": c["fp_per_image"],
                }
                if cls == "face":
                    cf_found, _ = E.run_detector(cf, images)
                    union = E.union_results([found, cf_found], [t, cf_t])
                    u = E.coverage_stats(union, 0.0, label=label)
                    row |= {"union_coverage": u["coverage"], "union_fp": u["fp_per_image"]}
                rows[f"{split}/{cls}"] = row
        report[name] = rows
        print(f"{name}: thresholds {chosen}")
        for k, row in rows.items():
            if k != "thresholds":
                print(f"  {k:11s} " + "  ".join(f"{n} {v:6.3f}" for n, v in row.items()))
    return report


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
