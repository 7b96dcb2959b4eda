"""Run-time tuning is a config change: a new user_config (batching, shadow share, faults)
reaches the running replicas through ``reconfigure``, without restarting them."""

from __future__ import annotations

import time

import pytest
from ray import serve

from tests.conftest import catalogue_images, png_bytes
from tests.serve.http import api, deploy_config

pytestmark = [pytest.mark.serve, pytest.mark.slow]


def _mirrored(url: str) -> int:
    return api.get(f"{url}/shadow", timeout=10).json()["mirrored"]


def _deploy(name: str, args: dict, deployments: list[dict] | None = None) -> None:
    deploy_config(name, "apps.visual_search:build_app", "/vs-tune", args, deployments)


def test_user_config_change_applies_without_restart(serve_instance, tiny_store):

    name, url = "vs_tune", f"{serve_instance}/vs-tune"
    args = {
        "artifact_store": str(tiny_store),
        "live_log": None,
        "encoder_placement": "deployment",  # the batched ImageEncoder, reconfigured in place
        "shadow": {"share": 0.0, "backend": "onnx-int8"},
    }
    _deploy(name, args)
    try:
        encoder = serve.get_deployment_handle("ImageEncoder", app_name=name)
        before = encoder.replica_config.remote().result()
        assert before["max_batch_size"] == 16 and before["fail_with"] is None
        img = png_bytes(catalogue_images(1)[0][0])
        for _ in range(5):
            assert api.post(f"{url}/search", files={"image": img}, timeout=30).ok
        assert _mirrored(url) == 0  # share 0: nothing mirrored

        # the operator's change: the same file with user_config overrides, deployed again
        _deploy(
            name,
            args,
            [
                {
                    "name": "ImageEncoder",
                    "user_config": {"max_batch_size": 4, "batch_wait_timeout_s": 0.02},
                },
                {"name": "VisualSearchIngress", "user_config": {"shadow": {"share": 1.0}}},
            ],
        )
        deadline = time.time() + 30
        while time.time() < deadline:
            after = encoder.replica_config.remote().result()
            if after["max_batch_size"] == 4:
                break
            time.sleep(0.2)
        assert after["pid"] == before["pid"]  # the same replica, reconfigured in place
        assert after["max_batch_size"] == 4 and after["batch_wait_timeout_s"] == 0.02
        for _ in range(5):
            assert api.post(f"{url}/search", files={"image": img}, timeout=30).ok
        deadline = time.time() + 20
        while _mirrored(url) < 5 and time.time() < deadline:
            time.sleep(0.2)
        assert _mirrored(url) >= 5  # share 1: every search mirrored from now on
        assert encoder.replica_config.remote().result()["pid"] == before["pid"]
    finally:
        serve.delete(name)
