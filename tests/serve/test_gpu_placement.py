"""Every deployment that ``serve_config.gpu.yaml`` gives a GPU really places its model there.

No GPU is needed: the apps are built from the GPU config's own args (artifact stores swapped
for the tests' tiny ones), each GPU deployment is constructed with the init args Serve would
pass it, inside a simulated Ray replica that was assigned GPU "0" with CUDA visible. Every
placement goes through ``mlsd.runtime.devices.place``, which records the device (and leaves the
tensors where they are, so the warm-up still runs on this CPU).
"""

from __future__ import annotations

import importlib
import typing
from pathlib import Path

import pytest
import ray
import torch
import yaml
from ray.serve.deployment import Application

from deployments.visual_search import ImageEncoder
from mlsd.runtime import devices as rt
from tests.conftest import new_objects, new_store

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow]


class FakeContext:
    def __init__(self, gpus):
        self.gpus = gpus

    def get_accelerator_ids(self):
        return {"GPU": self.gpus}

    def get_assigned_resources(self):
        return {"CPU": 2.0, **({"GPU": float(len(self.gpus))} if self.gpus else {})}


def _bound(app):
    """Every (name, class, args, kwargs) bound in an Application graph."""

    d = app._bound_deployment
    out = [(d.name, d.func_or_class, d.init_args, d.init_kwargs)]
    for v in [*d.init_args, *d.init_kwargs.values()]:
        if isinstance(v, Application):
            out += _bound(v)
    return out


def _gpu_deployments(app_cfg) -> set[str]:
    return {
        d["name"]
        for d in app_cfg.get("deployments", [])
        if d.get("ray_actor_options", {}).get("num_gpus", 0) > 0
    }


@pytest.fixture
def simulated_gpu_replica(monkeypatch):
    """A Ray replica with GPU "0" assigned; records every placement."""

    placed: list[str] = []

    def record(obj, device):
        placed.append(str(torch.device(device).type))
        return obj

    monkeypatch.setattr(ray, "is_initialized", lambda: True)
    monkeypatch.setattr(ray, "get_runtime_context", lambda: FakeContext(["0"]))
    monkeypatch.setattr(rt, "cuda_available", lambda: True)
    monkeypatch.setattr(rt, "place", record)
    # "initialised" is simulated: the builders' node count must not reach a Ray that is not
    # running (this file alone, without the session's Serve instance, used to fail there)
    monkeypatch.setattr(ray, "nodes", lambda: [{"Alive": True}])
    return placed


def _stores(tiny_store, rec_store, video_store, blur_store, harmful_store):
    return {
        "visual_search": tiny_store,
        "recommendation": rec_store,
        "video_search": video_store,
        "blurring": blur_store,
        "harmful_content": harmful_store,
    }


def test_every_gpu_deployment_places_its_model_on_cuda(
    simulated_gpu_replica, tiny_store, rec_store, video_store, blur_store, harmful_store, tmp_path
):

    raw = yaml.safe_load((ROOT / "serve_config.gpu.yaml").read_text())
    stores = _stores(tiny_store, rec_store, video_store, blur_store, harmful_store)
    checked = set()
    for app_cfg in raw["applications"]:
        wanted = _gpu_deployments(app_cfg)
        if not wanted:
            continue
        module = importlib.import_module(f"apps.{app_cfg['name']}")
        args_cls = typing.get_type_hints(module.build_app)["args"]  # the builder's own model
        args = dict(app_cfg["args"], artifact_store=str(stores[app_cfg["name"]]))
        for site_path in ("auth", "artifact_public_key"):  # the cluster's files, not here
            args.pop(site_path, None)
        for key in ("output_store", "object_store"):  # the cluster's bucket: a folder here
            if key in args:
                args[key] = new_objects(tmp_path / app_cfg["name"] / key)
        for key in ("live_log", "events_log", "review_queue"):  # its Postgres: SQLite here
            if key in args:
                args[key] = new_store(tmp_path / app_cfg["name"] / f"{key}.sqlite")
        if app_cfg["name"] == "video_search":  # the test store has one model artifact
            args["model"] = {"artifact": "video_text_zeroshot", "version": "v2"}
            args["shadow"] = dict(args["shadow"], artifact=None, version="v1")
        if app_cfg["name"] == "recommendation":
            args["shadow"] = dict(args["shadow"], version="v1")
        app = module.build_app(args_cls(**args))
        bound = {name: (cls, a, kw) for name, cls, a, kw in _bound(app)}
        assert wanted <= set(bound), wanted - set(bound)
        for name in sorted(wanted):
            cls, a, kw = bound[name]
            simulated_gpu_replica.clear()
            replica = cls(*a, **kw)
            assert simulated_gpu_replica, f"{name} placed nothing"
            assert set(simulated_gpu_replica) == {"cuda"}, (name, simulated_gpu_replica)
            assert replica.device == "cuda", name
            checked.add(f"{app_cfg['name']}/{name}")
    assert checked == {
        "visual_search/ImageEncoder",
        "recommendation/Ranking",
        "video_search/TextEncoder",
        "video_search/VideoIndexer",
        "blurring/Detector",
        "harmful_content/HarmClassifier",
        "harmful_content/ShadowHarmClassifier",
        "harmful_content/ImageFeatures",  # the tests' artifact takes images
    }


def test_a_replica_without_a_gpu_stays_on_cpu(monkeypatch, tiny_store):
    """CUDA visible but no GPU assigned to this replica (another replica's): CPU."""

    monkeypatch.setattr(ray, "is_initialized", lambda: True)
    monkeypatch.setattr(ray, "get_runtime_context", lambda: FakeContext([]))
    monkeypatch.setattr(rt, "cuda_available", lambda: True)
    enc = ImageEncoder.func_or_class(str(tiny_store), "visual_search", "latest", "torch")
    assert enc.device == "cpu"
