"""Detector artifacts: weights (state_dict, loaded with weights_only) + config + metrics."""

from __future__ import annotations

import torch
from torch import nn

from mlsd.artifacts import Artifact, ArtifactStore
from mlsd.blurring.model import DetectorConfig, build_detector
from mlsd.drift import REFERENCE_FILE
from mlsd.runtime import devices


def write_detector(
    store: ArtifactStore,
    name: str,
    model: nn.Module,
    cfg: DetectorConfig,
    train: dict,
    data: dict,
    metrics: dict,
    reference=None,
) -> str:
    """``reference``: the training photos' ``mlsd.drift.DriftReference``, if any."""
    w = store.new_version(name)
    torch.save(model.state_dict(), w.path("detector.pt"))
    if reference is not None:
        reference.save(w.path(REFERENCE_FILE))
    return w.commit(config={"detector": cfg.to_dict(), "train": train}, data=data, metrics=metrics)


def load_detector(art: Artifact, device: str = "cpu") -> tuple[nn.Module, DetectorConfig]:
    """The detector on ``device`` (through ``mlsd.runtime.devices.place``, the one placement
    path)."""

    cfg = DetectorConfig.from_dict(art.config["detector"])
    model = build_detector(cfg, pretrained=False)
    state = torch.load(art.file("detector.pt"), map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return devices.place(model, device).eval(), cfg
