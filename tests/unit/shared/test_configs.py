"""Both Serve configs parse, their args validate, and they only name deployments that exist."""

import json
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError
from ray.serve.schema import ServeDeploySchema

from apps.blurring import BlurringArgs
from apps.harmful_content import HarmfulContentArgs
from apps.recommendation import RecommendationArgs
from apps.video_search import VideoSearchArgs
from apps.visual_search import VisualSearchArgs
from mlsd.blurring.artifact import VALIDATED
from mlsd.blurring.backends import SERVED_MEMBERS
from train.blur_batch import parse_args

ROOT = Path(__file__).resolve().parents[3]
DEPLOYMENTS = {
    "visual_search": {
        "VisualSearchIngress",
        "ImageEncoder",
        "ShadowImageEncoder",
        "Retriever",
        "ShadowRetriever",
        "ShadowComparator",
        "DriftMonitor",
    },
    "recommendation": {
        "RecommendationIngress",
        "CandidateGeneration",
        "Ranking",
        "ShadowRanking",
        "ShadowComparator",
        "DriftMonitor",
    },
    "video_search": {
        "VideoSearchIngress",
        "TextEncoder",
        "VideoRetriever",
        "TextSearch",
        "VideoIndexer",
        "ShadowTextEncoder",
        "ShadowVideoRetriever",
        "ShadowComparator",
        "DriftMonitor",
    },
    "blurring": {
        "BlurringIngress",
        "Preprocess",
        "Detector",
        "ShadowDetector",
        "ShadowComparator",
        "DriftMonitor",
    },
    "harmful_content": {
        "HarmfulContentIngress",
        "HarmClassifier",
        "ShadowHarmClassifier",
        "ImageFeatures",
        "ShadowComparator",
        "DriftMonitor",
    },
}


@pytest.mark.parametrize(
    "name", ["serve_config.yaml", "serve_config.gpu.yaml", "serve_config.triton.yaml"]
)
def test_serve_config(name):

    builder_args = {
        "visual_search": VisualSearchArgs,
        "recommendation": RecommendationArgs,
        "video_search": VideoSearchArgs,
        "blurring": BlurringArgs,
        "harmful_content": HarmfulContentArgs,
    }
    raw = yaml.safe_load((ROOT / name).read_text())
    ServeDeploySchema.model_validate(raw)
    for app in raw["applications"]:
        module, builder = app["import_path"].split(":")
        assert module == f"apps.{app['name']}" and builder == "build_app"
        args = builder_args[app["name"]](**app["args"])
        names = {d["name"] for d in app.get("deployments", [])}
        assert names <= DEPLOYMENTS[app["name"]], names - DEPLOYMENTS[app["name"]]
        encoder = {"visual_search": "ImageEncoder", "video_search": "TextEncoder"}.get(app["name"])
        if encoder:  # Serve refuses the settings of a deployment the app does not build
            assert (encoder in names) == (args.encoder_placement == "deployment"), app["name"]
        if app["name"] == "video_search":  # the branches: deployments, or in the ingress
            branches = {"VideoRetriever", "TextSearch"}
            assert names & branches == (
                branches if args.branch_placement == "deployments" else set()
            )
    if name == "serve_config.yaml":  # the laptop config never waits for a GPU
        total = 0.0
        for app in raw["applications"]:
            for d in app.get("deployments", []):
                assert "num_gpus" not in d.get("ray_actor_options", {})
                total += d["ray_actor_options"]["num_cpus"] * d.get("num_replicas", 1)
        # every app together must schedule on a 2-core laptop (`serve run` reserves per CPU)
        names = {d["name"] for app in raw["applications"] for d in app.get("deployments", [])}
        assert total <= 2.0, total
        # only when their app runs a shadow / its model takes images
        optional = {"ShadowRetriever", "ShadowDetector", "ImageFeatures"}
        optional |= {"ImageEncoder", "TextEncoder"}  # encoder_placement: ingress
        optional |= {"VideoRetriever", "TextSearch"}  # branch_placement: ingress
        assert names >= set().union(*DEPLOYMENTS.values()) - optional


def test_unknown_builder_args_are_rejected():

    with pytest.raises(ValidationError):
        VisualSearchArgs(artifact_stor="typo")


def test_a_fault_for_an_encoder_that_runs_in_the_ingress_is_refused():
    with pytest.raises(ValidationError, match="encoder_placement"):
        VisualSearchArgs(fault_injection={"ImageEncoder": "error"})
    VisualSearchArgs(encoder_placement="deployment", fault_injection={"ImageEncoder": "error"})


def test_a_fault_for_a_branch_that_runs_in_the_ingress_is_refused():
    with pytest.raises(ValidationError, match="branch_placement"):
        VideoSearchArgs(fault_injection={"VideoRetriever": "error"})
    VideoSearchArgs(branch_placement="deployments", fault_injection={"TextSearch": "error"})


def test_the_blurring_service_and_batch_job_blur_with_the_same_detector():
    """serve_config.yaml's /blurring detector is SERVED_MEMBERS (what the batch job and the
    app default to), with enclosing fusion; every member that serves faces or plates has one."""

    raw = yaml.safe_load((ROOT / "serve_config.yaml").read_text())
    app = next(a for a in raw["applications"] if a["name"] == "blurring")
    assert app["args"]["detector"]["members"] == SERVED_MEMBERS
    assert app["args"]["detector"]["fusion"] == "enclose"

    assert json.loads(parse_args(["--input", "i", "--output", "o"]).detector) == SERVED_MEMBERS
    # ours at the face and plate thresholds its artifact was validated at: plates are blurred
    # too, not only faces (the artifact's side: tests/unit/blurring/test_validated_thresholds)
    ours, *others = SERVED_MEMBERS
    assert ours["kind"] == "torch" and ours["threshold"] == VALIDATED
    assert all(set(m["threshold"]) == {"face"} for m in others)
