"""Street View blurring: every detector side by side on the held-out test images.

    python -m bench.blurring_eval [--store artifacts] [--ours blurring_fcos blurring_faster_rcnn]

Faces: face_mask_detection (89 photos, 847 faces; never trained or tuned on). Plates:
openalpr_plates eu + us, every third file by name. Each image at long side 1024. Served
thresholds are chosen on the validation split (faces: the eighth of the training photos held
out; plates: an eighth of the plate train files) as the lowest with FP/image within the bound;
CenterFace also at the 0.2 the issue names. Rows: AP@0.5 (VOC all-point), AP@[.5:.95], blur
coverage (GT >= 80 % covered by the 1.2x-enlarged union of blurred boxes), FP/image, blurred
area, images/s on this machine (one process, its threads); faces also per size bucket.
PR curves: docs/plots/blurring_pr_<class>.png. CenterFace's int8 graph (artifact
centerface_int8, train.blurring_centerface) is a row of its own and a member of the served
union's candidates when the store holds it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from mlsd.artifacts import ArtifactError, ArtifactStore
from mlsd.blurring import backends as B
from mlsd.blurring import data as D
from mlsd.blurring import evaluation as E
from mlsd.blurring.artifact import CENTERFACE_INT8, CENTERFACE_INT8_SPEC
from mlsd.runtime import resolve_threads, set_process_threads


def _fmt(v) -> str:
    return "   -  " if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:6.3f}"


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--store", default="artifacts")
    p.add_argument(
        "--ours",
        nargs="*",
        default=["blurring_fcos:onnx-int8"],
        help="detector artifacts, each ARTIFACT[:BACKEND] (torch, onnx, onnx-int8: as served)",
    )
    p.add_argument("--max-fp-face", type=float, default=E.FP_BOUNDS["face"])
    p.add_argument("--max-fp-plate", type=float, default=E.FP_BOUNDS["plate"])
    p.add_argument(
        "--coverage-tolerance",
        type=float,
        default=0.01,
        help="served: the fastest configuration within this much of the best validation coverage",
    )
    p.add_argument("--limit", type=int, default=0, help="first N images of each set (smoke)")
    p.add_argument("--plots", default="docs/plots")
    p.add_argument("--out", default="var/bench/blurring_eval.json")
    p.add_argument("--threads", type=int, default=0, help="0 = this process's CPUs")
    p.add_argument("--union", nargs="*", default=[], help="plates: detectors to union")
    p.add_argument(
        "--fusion",
        nargs="*",
        default=["nms", "enclose"],
        help="how ensembles merge overlapping boxes (each is a row)",
    )
    p.add_argument(
        "--face-sides",
        nargs="*",
        type=int,
        default=[],
        help="also run CenterFace and YuNet with the image resized to these long sides "
        "(e.g. 2048: small faces at twice their pixels), alone and in unions",
    )
    a = p.parse_args(argv)

    threads = set_process_threads(a.threads or resolve_threads())
    torch.set_num_threads(threads)
    cut = (lambda xs: xs[: a.limit]) if a.limit else (lambda xs: xs)
    sets = {
        "face": (cut(D.faces("test")), cut(D.faces("val")), D.FACE, a.max_fp_face),
        "plate": (cut(D.plates("test")), cut(D.plates("val")), D.PLATE, a.max_fp_plate),
    }
    dets = {
        "centerface": B.CenterFace(long_side=None, num_threads=threads),
        "yunet": B.YuNet(long_side=None, min_score=0.05),
        "haar_face": B.HaarCascade(D.FACE, long_side=None),
        "haar_plate": B.HaarCascade(D.PLATE, long_side=None),
        "dlib_hog": B.DlibHOG(long_side=None),
    }
    for side in a.face_sides:
        dets[f"centerface_{side}"] = B.CenterFace(long_side=side, num_threads=threads)
        dets[f"yunet_{side}"] = B.YuNet(long_side=side, min_score=0.05)
    store = ArtifactStore(a.store)
    try:  # CenterFace's int8 graph (train.blurring_centerface), beside the packaged fp32 one
        dets[CENTERFACE_INT8] = B.build_backend(CENTERFACE_INT8_SPEC, store, "cpu", threads)
    except ArtifactError as e:
        print(f"skipping {CENTERFACE_INT8}: {e}")
    ours = []
    for name in a.ours:
        try:
            dets[name] = B.build_backend(B.ours_spec(name), store, "cpu", threads)
            ours.append(name)
        except ArtifactError as e:
            print(f"skipping {name}: {e}")
    report: dict = {"rows": [], "thresholds": {}}
    for cls, (test, val, label, max_fp) in sets.items():
        test_imgs, val_imgs = E.at_scale(test), E.at_scale(val)
        members = [n for n, d in dets.items() if label in d.labels]
        results, speed, thresholds, val_results, val_cover = {}, {}, {}, {}, {}
        for n in members:
            results[n], speed[n] = E.run_detector(dets[n], test_imgs)
            val_results[n], _ = E.run_detector(dets[n], val_imgs)
            thresholds[n] = E.choose_threshold(val_results[n], label, max_fp)
            val_cover[n] = E.coverage_stats(val_results[n], thresholds[n], label=label)
        if cls == "face":
            thresholds["centerface@0.2"] = 0.2
            results["centerface@0.2"], speed["centerface@0.2"] = (
                results["centerface"],
                speed["centerface"],
            )
        # ensembles: members' thresholds chosen jointly on validation (union, then fusion); the
        # union's test detections come from the members' own, so no detector runs twice
        combos = [tuple(a.union)] if a.union else []
        if cls == "face":
            # ours joins the packaged union: the first --ours only (each 3-way search is
            # exhaustive; the others are rows for the comparison)
            combos = [("centerface", "yunet")] + [(o, "centerface", "yunet") for o in ours[:1]]
            combos += [(o, CENTERFACE_INT8, "yunet") for o in ours[:1]]  # the same, faster
            combos += [(o, c) for o in ours[:1] for c in ("centerface", CENTERFACE_INT8)]
            for side in a.face_sides:  # the upscaled detectors with and beside the 1024 ones
                combos += [
                    (f"centerface_{side}", f"yunet_{side}"),
                    (f"centerface_{side}", "yunet"),
                    ("centerface", f"centerface_{side}", "yunet"),
                ]
        for combo, fusion in ((c, f) for c in combos for f in a.fusion):
            if not all(c in results for c in combo):
                continue
            ts, vstats = E.choose_ensemble_thresholds(
                [val_results[c] for c in combo], label, max_fp, fusion=fusion
            )
            n = "∪".join(f"{c}@{t:.2f}" for c, t in zip(combo, ts, strict=True)) + f" ({fusion})"
            results[n] = E.union_results([results[c] for c in combo], ts, fusion=fusion)
            speed[n] = 1.0 / sum(1.0 / speed[c] for c in combo)
            thresholds[n], val_cover[n] = 0.0, vstats
            report.setdefault("ensembles", {})[n] = {
                "members": list(combo),
                "thresholds": ts,
                "fusion": fusion,
                "validation": vstats,
            }
        # the served configuration: the fastest within --coverage-tolerance of the best
        # validation coverage inside the FP bound
        served = E.choose_served(val_cover, speed, max_fp, a.coverage_tolerance)
        report.setdefault("served", {})[cls] = served
        report["thresholds"][cls] = thresholds
        print(
            f"\n{cls}s: {len(test)} test images, {sum(len(e.boxes) for e in test)} boxes; "
            f"thresholds from validation at <= {max_fp} FP/image"
        )
        head = (
            f" {'detector':56s} {'thr':>5s} {'AP50':>6s} {'AP.5:.95':>8s} {'cover':>6s} "
            f"{'FP/img':>6s} {'area':>6s} {'img/s':>6s}"
        )
        if cls == "face":
            head += "  AP50 <16 16-32 >=32   cover <16 16-32 >=32"
        print(head)
        for n, res in results.items():
            row = E.evaluate(res, label, thresholds[n], buckets=cls == "face")
            row |= {
                "detector": n,
                "class": cls,
                "threshold": thresholds[n],
                "images_per_s": speed[n],
            }
            report["rows"].append(row)
            mark = "*" if n == served else " "
            line = (
                f"{mark}{n:56s} {thresholds[n]:5.2f} {_fmt(row['ap50'])} "
                f"{_fmt(row['ap50_95'])}  "
                f"{_fmt(row['coverage'])} {row['fp_per_image']:6.2f} "
                f"{row['blurred_area']:6.3f} {speed[n]:6.2f}"
            )
            if cls == "face":
                line += "  " + " ".join(_fmt(row[f"ap50[{b}]"]) for b in E.SIZE_BUCKETS)
                line += "  " + " ".join(_fmt(row[f"coverage[{b}]"]) for b in E.SIZE_BUCKETS)
            print(line)
        if cls == "face":
            g = {
                b: next(r for r in report["rows"] if r["class"] == "face")[f"gt[{b}]"]
                for b in E.SIZE_BUCKETS
            }
            print(f"face boxes per size bucket (sqrt(w*h) at long side 1024): {g}")
        print(
            f"* served: the fastest within {a.coverage_tolerance} of the best validation "
            f"coverage at <= {max_fp} FP/image ({served})"
        )
        if a.plots:
            _plot(results, label, cls, Path(a.plots))
    report["served_members"] = served_members(report, ours)
    print("\nthe served configuration as detector members (serve_config.yaml `detector:`):")
    print(json.dumps(report["served_members"]))
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(report, indent=2, default=float))
    return report


def served_members(report: dict, ours: list[str]) -> list[dict]:
    """Each class's served pick (a detector at its threshold, or an ensemble's members at
    theirs) merged into one member list, per-class thresholds where a detector serves both."""
    per: dict[str, dict[str, float]] = {}
    for cls, name in (report.get("served") or {}).items():
        if name is None:
            continue
        ens = (report.get("ensembles") or {}).get(name)
        if ens:
            picks = list(zip(ens["members"], ens["thresholds"], strict=True))
        else:
            picks = [(name, report["thresholds"][cls][name])]
        for det, t in picks:
            # "centerface@0.2" is a row at a fixed threshold; ours may be ARTIFACT@VERSION
            det = det if det in ours else det.split("@")[0]
            per.setdefault(det, {})[cls] = float(t)
    members = []
    for det, ts in per.items():
        kind, _, side = det.partition("_")  # "centerface_2048": CenterFace at long side 2048
        if det in ours:
            spec = B.ours_spec(det)
        elif det == CENTERFACE_INT8:
            spec = dict(CENTERFACE_INT8_SPEC)
        elif side.isdigit() and kind in ("centerface", "yunet"):
            spec = {"kind": kind, "long_side": int(side)}
        else:
            spec = {"kind": det}
        members.append(spec | {"threshold": ts})
    return members


def _plot(results: dict, label: int, cls: str, folder: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6, 5))
    for n, res in results.items():
        if "@" in n:
            continue  # unions carry members' scores: no single PR curve
        r, pr, _ = E.pr_curve(res, label)
        if len(r):
            ax.plot(r, pr, label=f"{n} (AP50 {E.ap(res, label):.3f})")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title(f"{cls}s, test set, long side 1024, IoU 0.5")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    fig.savefig(folder / f"blurring_pr_{cls}.png", dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
