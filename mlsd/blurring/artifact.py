"""Detector artifacts: weights (state_dict, loaded with weights_only) + config + metrics, and
for FCOS the graph onnxruntime runs (fp32, and int8 calibrated on training photos); and the
packaged CenterFace's int8 graph (``centerface_int8``: no weights of ours, a calibration)."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mlsd.artifacts import Artifact, ArtifactError, ArtifactStore
from mlsd.blurring import centerface
from mlsd.blurring.evaluation import FP_BOUNDS, validated_thresholds
from mlsd.blurring.model import DenseFCOS, DetectorConfig, build_detector, set_input_scale
from mlsd.blurring.pipeline import DenseDetector, TorchDetector, to_tensor
from mlsd.drift import REFERENCE_FILE
from mlsd.runtime import devices, export_onnx, load_runner, make_runner, quantize_int8
from mlsd.runtime.base import ModelRunner

# the backends our detector is served through, and the artifact file each runs
DETECTOR_FILES = {
    "torch": "detector.pt",
    "onnx": "detector.onnx",
    "onnx-int8": "detector.int8.onnx",
}
CALIBRATION_PHOTOS = 8  # int8 ranges from this many training photos (each at the served scale)
# a member's "threshold": the ones its artifact was validated at (train.blurring chooses them
# on validation photos, per class, for the graph it serves: mlsd.blurring.evaluation.FP_BOUNDS)
VALIDATED = "validated"


def calibration_photos(faces: list, plates: list, n: int = CALIBRATION_PHOTOS) -> list:
    """The int8 graph's calibration photos: spread over the training faces and plates, half
    each where both exist (activation ranges from both kinds of scene)."""
    half = [xs for xs in (faces, plates) if xs]
    picked = []
    for xs in half:
        k = max(1, n // len(half))
        picked += xs[:: max(1, len(xs) // k)][:k]
    return picked


def write_detector(
    store: ArtifactStore,
    name: str,
    model: nn.Module,
    cfg: DetectorConfig,
    train: dict,
    data: dict,
    metrics: dict,
    reference=None,
    calibration: Sequence[np.ndarray] = (),
    validation: Sequence | dict[str, Sequence] = (),
) -> tuple[str, dict | None]:
    """``reference``: the training photos' ``mlsd.drift.DriftReference``, if any;
    ``calibration``: (H, W, 3) uint8 training photos for the int8 graph (FCOS only);
    ``validation``: (image, boxes, labels) at the evaluation scale, photos not trained on
    (one list, or per class: :func:`mlsd.blurring.evaluation.validated_thresholds`): the
    served thresholds (``"threshold": "validated"``) are chosen there, on the graph that is
    served (FCOS: int8), and kept in the config with the coverage they reached. Returns the
    version and those thresholds (None without validation photos)."""
    w = store.new_version(name)
    torch.save(model.state_dict(), w.path("detector.pt"))
    config = {"detector": cfg.to_dict(), "train": train}
    metrics = dict(metrics)
    model = model.cpu().eval()
    if cfg.family == "fcos":
        fp32, int8 = (w.path(DETECTOR_FILES[b]) for b in ("onnx", "onnx-int8"))
        export_dense(model, cfg, fp32, int8, calibration)
    if validation:
        fcos = cfg.family == "fcos"
        int8 = w.path(DETECTOR_FILES["onnx-int8"])
        detect = (  # the graph that is served: FCOS's int8, else torch
            DenseDetector(make_runner("onnx", path=int8, device="cpu"), model, cfg, cfg.max_size)
            if fcos
            else TorchDetector(model, cfg.max_size)
        )
        thresholds, stats = validated_thresholds(detect, validation)
        config["thresholds"] = thresholds
        config["thresholds_rule"] = (
            f"per class, the lowest with FP/image within {FP_BOUNDS} on its validation "
            f"photos, {'int8 graph' if fcos else 'torch'}"
        )
        metrics |= stats
    if reference is not None:
        reference.save(w.path(REFERENCE_FILE))
    return w.commit(config=config, data=data, metrics=metrics), config.get("thresholds")


def export_dense(
    model: nn.Module,
    cfg: DetectorConfig,
    fp32: Path,
    int8: Path,
    photos: Sequence[np.ndarray],
) -> None:
    """FCOS's backbone and heads as ONNX (dynamic batch and image size), and that graph
    statically quantised to int8 (QDQ, per-channel) with activation ranges from ``photos``,
    each put through the model's own transform at the served scale. The decoding stays in
    torch (``mlsd.blurring.pipeline.detect_dense``)."""
    if not photos:
        raise ValueError("the int8 detector needs calibration photos (training photos)")
    model = model.cpu().eval()
    set_input_scale(model, cfg.max_size)
    with torch.inference_mode():
        batches = [model.transform([to_tensor(p)])[0].tensors for p in photos]
    dynamic = {"image": [0, 2, 3]}  # (B, 3, H, W): any batch, any padded size
    export_onnx(DenseFCOS(model), {"image": batches[0]}, fp32, "image", "dense", dynamic)
    quantize_int8(fp32, int8, [b.numpy() for b in batches])


def load_detector(art: Artifact, device: str = "cpu") -> tuple[nn.Module, DetectorConfig]:
    """The detector on ``device`` (through ``mlsd.runtime.devices.place``, the one placement
    path)."""

    cfg = DetectorConfig.from_dict(art.config["detector"])
    model = build_detector(cfg, pretrained=False)
    state = torch.load(art.file("detector.pt"), map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return devices.place(model, device).eval(), cfg


def check_backend(art: Artifact, backend: str) -> DetectorConfig:
    """The detector's config, if ``art`` holds what ``backend`` runs (build time: ``serve
    run`` fails naming it, no replica does)."""
    if backend not in DETECTOR_FILES:
        raise ValueError(
            f"detector {art.name!r}: backend must be one of {list(DETECTOR_FILES)}, got {backend!r}"
        )
    cfg = DetectorConfig.from_dict(art.config["detector"])
    if backend != "torch" and cfg.family != "fcos":
        raise ValueError(f"{art.name}: the {backend!r} backend serves FCOS detectors' graphs")
    if DETECTOR_FILES[backend] not in art.manifest.get("files", {}):
        raise ArtifactError(
            f"{art.name}/{art.version} has no graph for the {backend!r} backend (written "
            f"before detectors were exported to ONNX): `python -m train.blurring --export-only "
            f"--run-name RUN` writes a version that has it"
        )
    return cfg


def load_dense_detector(
    art: Artifact,
    backend: str,
    device: str = "cpu",
    num_threads: int | None = None,
    gpu_ids: Sequence | None = None,
) -> tuple[ModelRunner, nn.Module, DetectorConfig]:
    """The ONNX graph behind ``backend`` (``onnx`` / ``onnx-int8``) through the one model
    loader, with the weightless FCOS module that prepares its input and decodes its output."""
    cfg = check_backend(art, backend)
    runner = load_runner(
        art,
        backend,
        DETECTOR_FILES,
        lambda: None,
        device=device,
        num_threads=num_threads,
        gpu_ids=gpu_ids,
        what="detector",
    )
    return runner, build_detector(cfg, pretrained=False).eval(), cfg


# the packaged CenterFace's backends: its own fp32 graph (no artifact), or int8 from an artifact
CENTERFACE_BACKENDS = ("onnx", "onnx-int8")
CENTERFACE_INT8 = "centerface_int8"  # the artifact train.blurring_centerface writes
# CenterFace through its int8 graph, as a detector member (add a "threshold")
CENTERFACE_INT8_SPEC = {"kind": "centerface", "backend": "onnx-int8", "artifact": CENTERFACE_INT8}


def write_centerface_int8(
    store: ArtifactStore, name: str, graph: Path, calibration: dict, data: dict, metrics: dict
) -> str:
    """CenterFace's int8 ``graph`` (:func:`mlsd.blurring.centerface.quantize`) as a version of
    artifact ``name``."""
    w = store.new_version(name)
    shutil.copyfile(graph, w.path(centerface.INT8_FILE))
    config = {"detector": {"family": "centerface", "backend": "onnx-int8"}, "int8": calibration}
    return w.commit(config=config, data=data, metrics=metrics)


def member_artifact(spec: dict) -> str | None:
    """The artifact a detector member loads (ours; CenterFace's int8 graph), None if it
    loads none (the packaged detectors)."""
    if spec.get("kind") == "torch":
        return spec["artifact"]
    if spec.get("kind") == "centerface":
        backend = spec.get("backend", "onnx")
        if backend not in CENTERFACE_BACKENDS:
            raise ValueError(
                f"detector 'centerface': backend must be one of {list(CENTERFACE_BACKENDS)}, "
                f"got {backend!r}"
            )
        if backend == "onnx-int8":
            return spec.get("artifact", CENTERFACE_INT8)
        if "artifact" in spec or "version" in spec:  # it would run the packaged fp32 graph
            raise ValueError(
                "detector 'centerface': an 'artifact' or 'version' is CenterFace's int8 graph; "
                'add "backend": "onnx-int8" (or drop them for the packaged fp32 graph)'
            )
    return None


def check_member(art: Artifact, spec: dict) -> None:
    """``art`` holds what member ``spec`` runs (build time: ``serve run`` fails naming it)."""
    if spec.get("kind") == "torch":
        check_backend(art, spec.get("backend", "torch"))
        if spec.get("threshold") == VALIDATED and not art.config.get("thresholds"):
            raise ArtifactError(
                f"{art.name}/{art.version} holds no validated thresholds (written before they "
                "were chosen at training time, or trained without validation photos): give the "
                'member numbers ("threshold": {"face": 0.3, "plate": 0.35}), or write a version '
                f"that has them: python -m train.blurring --from-artifact {art.name}@{art.version}"
            )
        return
    if centerface.INT8_FILE not in art.manifest.get("files", {}):
        raise ArtifactError(
            f"{art.name}/{art.version} holds no {centerface.INT8_FILE}: it is not a CenterFace "
            f"int8 artifact (`python -m train.blurring_centerface` writes one)"
        )


def load_member(store: ArtifactStore, spec: dict) -> Artifact | None:
    """The artifact member ``spec`` loads (its ``version``, else ``latest``), checked to hold
    what the member runs; None for a member that loads none."""
    name = member_artifact(spec)  # checks a CenterFace backend
    if name is None:
        return None
    if store is None:
        raise ValueError(f"detector {spec.get('kind')!r}: artifact {name} needs an artifact store")
    art = store.load(name, spec.get("version", "latest"))
    check_member(art, spec)
    return art


def pin_members(store: ArtifactStore, members: list[dict]) -> list[dict]:
    """``members`` with each artifact's ``latest`` resolved to one checked version: every
    actor of a job then loads the same one, and a missing or wrong artifact fails before the
    job starts, naming it (the apps pin through ``apps.common.ModelRef``, with their pins)."""
    out = []
    for m in members:
        m = dict(m)
        if (art := load_member(store, m)) is not None:
            m["version"] = art.version
            m = with_thresholds(art, m)
        out.append(m)
    return out


def with_thresholds(art: Artifact, spec: dict) -> dict:
    """Member ``spec`` with ``"threshold": "validated"`` replaced by the numbers ``art`` was
    validated at (``{"face": .., "plate": ..}``; a class it has none for is never blurred by
    it); any other threshold as given. ``art`` passed :func:`check_member`."""
    if spec.get("threshold") != VALIDATED:
        return spec
    return spec | {"threshold": dict(art.config["thresholds"])}


def centerface_graph(store: ArtifactStore, spec: dict) -> Path | None:
    """The graph a CenterFace member runs: None for the packaged fp32 one (``backend: onnx``),
    the int8 file of its artifact for ``onnx-int8``."""
    art = load_member(store, spec)
    return None if art is None else art.file(centerface.INT8_FILE)
