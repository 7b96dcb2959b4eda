"""Classifier artifacts: weights (state_dict, loaded with weights_only), the ONNX export the
shared runner serves, the config (heads, feature layout, text encoder) and metrics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from mlsd.artifacts import Artifact, ArtifactStore
from mlsd.drift import REFERENCE_FILE
from mlsd.harmful_content.features import NgramBag
from mlsd.harmful_content.model import ClassifierConfig, build_classifier
from mlsd.harmful_content.policy import (
    HeadPolicy,
    Policy,
    PolicyReport,
    PolicyTargets,
    ValidationScores,
    fit_platform_policy,
)
from mlsd.runtime import devices, export_onnx

VALIDATION_FILE = "validation_scores.npz"
# the backends the classifier is served by, each with the artifact file it runs (no int8:
# the classifier's n-gram tables do not quantise; see README)
CLASSIFIER_FILES = {"torch": "classifier.pt", "onnx": "classifier.onnx",
                    "triton": "classifier.onnx"}  # fmt: skip


class Probabilities(nn.Module):
    """The classifier with per-head probabilities as output (what every runner serves)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.sigmoid(self.model(x))


def export_classifier(model: nn.Module, example: dict[str, np.ndarray], path) -> Path:
    """ONNX of the classifier with per-head probabilities as output (batch axis dynamic)."""

    tensors = {k: torch.as_tensor(v) for k, v in example.items()}
    # batch axis everywhere; the n-gram bag's length varies with the batch's longest text
    dynamic = {k: [0, 1] if k.startswith("ngram_") else [0] for k in tensors}
    return export_onnx(
        Probabilities(model).eval(), tensors, path, output_name="probabilities", dynamic=dynamic
    )


def write_classifier(
    store: ArtifactStore,
    name: str,
    model: nn.Module,
    cfg: ClassifierConfig,
    example: dict[str, np.ndarray],
    encoder: str,
    bag,
    train: dict,
    data: dict,
    metrics: dict,
    policy: dict | None = None,
    reference=None,
    validation=None,
    languages=None,
    text_case: str = "as_is",
) -> str:
    """Weights, ONNX, the n-gram bag's idf (``bag``: a fitted NgramBag or None), config,
    ``reference`` (``mlsd.drift.DriftReference`` of the validation posts), if any, and
    ``validation`` (:class:`mlsd.harmful_content.policy.ValidationScores`: serving fits the
    platform's policy on it); ``languages``: those the training posts are in; ``text_case``:
    the casing the encoder saw (:class:`mlsd.harmful_content.features.TextEncoder`)."""
    w = store.new_version(name)
    if validation is not None:
        validation.save(w.path(VALIDATION_FILE))
    if reference is not None:
        reference.save(w.path(REFERENCE_FILE))
    torch.save(model.state_dict(), w.path("classifier.pt"))
    export_classifier(model, example, w.path("classifier.onnx"))
    if bag is not None:
        np.save(w.path("ngram_idf.npy"), bag.idf)
    return w.commit(
        config={
            "classifier": cfg.to_dict(),
            "text_encoder": encoder,
            "text_case": text_case,
            "ngram_bag": bag.state() if bag is not None else None,
            "policy": policy or {},
            "train": train,
            "languages": sorted(languages or []),
        },
        data=data,
        metrics=metrics,
    )


def load_validation(art: Artifact) -> ValidationScores | None:
    """The validation scores the platform policy is fitted on (None: an artifact from before
    they were kept; its tuned thresholds serve as they are)."""
    if VALIDATION_FILE not in art.manifest.get("files", {}):
        return None
    return ValidationScores.load(art.file(VALIDATION_FILE))


def load_policy(
    art: Artifact, targets: PolicyTargets, overrides: dict | None = None
) -> tuple[Policy, PolicyReport | None]:
    """The served policy of a classifier artifact: fitted to the platform's ``targets`` on
    the artifact's validation scores, with any head's thresholds in ``overrides`` (on the
    platform's probability scale) over the fitted ones. An artifact without validation scores
    serves its tuned thresholds on raw probabilities (report None). Bad thresholds raise
    ``ValueError``."""
    overrides = dict(overrides or {})
    val = load_validation(art)
    if val is None:
        return Policy.from_dict({**(art.config.get("policy") or {}), **overrides}), None
    policy, report = fit_platform_policy(val, targets)
    default = overrides.pop("default", None)
    for h in policy.heads:
        if h in overrides or default is not None:
            policy.heads[h] = HeadPolicy(**(overrides.get(h) or default))
    unknown = sorted(set(overrides) - set(policy.heads))
    if unknown:
        raise ValueError(f"policy overrides name heads the model does not have: {unknown}")
    return policy, report


def load_bag(art: Artifact):
    """The fitted n-gram bag of a classifier artifact (None if it has none)."""

    state = art.config.get("ngram_bag")
    if not state:
        return None
    bag = NgramBag(**state)
    bag.idf = np.load(art.file("ngram_idf.npy"))
    return bag


def load_classifier(
    art: Artifact, device: str | None = "cpu"
) -> tuple[nn.Module, ClassifierConfig]:
    """The classifier in eval mode, on ``device`` (None: left where it was built, for a
    runner that places it itself)."""

    cfg = ClassifierConfig.from_dict(art.config["classifier"])
    model = build_classifier(cfg)
    state = torch.load(art.file("classifier.pt"), map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return (devices.place(model, device) if device else model).eval(), cfg
