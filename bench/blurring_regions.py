"""Licence plates of a country the detector never saw: leave one region out.

    python -m train.blurring --no-faces --plate-regions eu --epochs 12 --name plates_eu ...
    python -m train.blurring --no-faces --plate-regions us --epochs 12 --name plates_us ...
    python -m bench.blurring_regions --store var/loro/store \\
        --models eu=plates_eu us=plates_us eu=plates_eu_syn us=plates_us_syn

Each ``REGION=ARTIFACT`` is a plate detector trained on that OpenALPR region's training files
alone. Its threshold is chosen as the served one is (the lowest with <= 1 FP/image on that
region's validation files); it is then measured on every photo of the region it never saw (all
of them: none was trained or tuned on) and, for reference, on its own region's test files and
on today's test split (eu + us, every third file). Rows: coverage (the plate >= 80 % inside the
1.2x-enlarged blurred boxes), AP@0.5, FP/image. The held-out coverage is the figure.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from mlsd.artifacts import ArtifactStore
from mlsd.blurring import data as D
from mlsd.blurring import evaluation as E
from mlsd.blurring.backends import build_backend
from mlsd.runtime import resolve_threads, set_process_threads

REGIONS = ("eu", "us")


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--store", default="artifacts")
    p.add_argument("--models", nargs="+", required=True, help="REGION=ARTIFACT, trained on REGION")
    p.add_argument("--max-fp", type=float, default=1.0)
    p.add_argument("--backend", default="torch", help="torch | onnx | onnx-int8 (as served)")
    p.add_argument("--limit", type=int, default=0, help="first N photos of each set (smoke)")
    p.add_argument("--threads", type=int, default=0, help="0 = this process's CPUs")
    p.add_argument("--out", default="var/bench/blurring_regions.json")
    a = p.parse_args(argv)

    torch.set_num_threads(set_process_threads(a.threads or resolve_threads()))
    cut = (lambda xs: xs[: a.limit]) if a.limit else (lambda xs: xs)
    every = {r: cut(D.read_openalpr(D.data_root() / "openalpr_plates" / r)) for r in REGIONS}
    prepared: dict[str, list] = {}  # decoded + resized once, on first use, for every model

    def images(key: str) -> list:  # "all:eu", "val:us", "test:eu", ...
        if key not in prepared:
            split, region = key.split(":")
            xs = every[region] if split == "all" else cut(D.plates(split, regions=(region,)))
            prepared[key] = E.at_scale(xs)
        return prepared[key]

    # where each region's test files sit among all its photos: a held-out region's test rows
    # come from its "all" run, not from running the detector on them again
    test_paths = {r: {e.path for e in D.plates("test", regions=(r,))} for r in REGIONS}
    test_rows = {
        r: [i for i, e in enumerate(xs) if e.path in test_paths[r]] for r, xs in every.items()
    }
    store = ArtifactStore(a.store)
    rows = []
    head = (
        f"{'model':22s} {'trained':>7s} {'thr':>5s} | {'held-out':>8s} {'cover':>6s} {'AP50':>6s} "
        f"{'FP/img':>6s} | {'own test':>8s} {'cover':>6s} {'AP50':>6s} | "
        f"{'eu+us test':>10s} {'AP50':>6s} {'cover':>6s}"
    )
    print(head)
    for spec in a.models:
        region, _, name = spec.partition("=")
        if region not in REGIONS or not name:
            raise SystemExit(f"--models takes REGION=ARTIFACT with REGION in {REGIONS}: {spec!r}")
        art = store.load(name)
        det = build_backend({"kind": "torch", "artifact": name, "backend": a.backend}, store)

        def results(key: str, det=det) -> list:
            return E.run_detector(det, images(key))[0]

        thr = E.choose_threshold(results(f"val:{region}"), D.PLATE, a.max_fp)
        out = {"model": name, "version": art.version, "trained_on": region, "threshold": thr}
        out["train"] = art.manifest.get("config", {}).get("train", {})
        own = results(f"test:{region}")
        test_both = own[:]
        for held in (r for r in REGIONS if r != region):
            res = results(f"all:{held}")
            out[f"held_out:{held}"] = E.evaluate(res, D.PLATE, thr, buckets=False)
            test_both += [res[i] for i in test_rows[held]]
        out["own_test"] = E.evaluate(own, D.PLATE, thr, buckets=False)
        out["test_eu_us"] = E.evaluate(test_both, D.PLATE, thr, buckets=False)
        rows.append(out)
        held = next(k for k in out if k.startswith("held_out:"))
        h, o, t = out[held], out["own_test"], out["test_eu_us"]
        print(
            f"{name:22s} {region:>7s} {thr:5.2f} | {held[9:]:>8s} {h['coverage']:6.3f} "
            f"{h['ap50']:6.3f} {h['fp_per_image']:6.2f} | {region:>8s} {o['coverage']:6.3f} "
            f"{o['ap50']:6.3f} | {'':>10s} {t['ap50']:6.3f} {t['coverage']:6.3f}"
        )
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(rows, indent=2, default=float))
    return rows


if __name__ == "__main__":
    main()
