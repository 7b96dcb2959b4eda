"""A shadow that raises or hangs never changes, delays or fails the primary answer."""

from __future__ import annotations

import time

import pytest
from ray import serve

from apps.visual_search import VisualSearchArgs, build_app
from mlsd.artifacts import ArtifactError
from tests.conftest import catalogue_images, png_bytes
from tests.serve.http import api

pytestmark = [pytest.mark.serve, pytest.mark.slow]


@pytest.fixture(scope="module")
def reference(serve_instance, tiny_store):
    """Primary answers with no shadow at all, to compare against."""

    args = VisualSearchArgs(artifact_store=str(tiny_store), live_log=None)
    serve.run(build_app(args), name="vs_plain", route_prefix="/vs-plain")
    url = f"{serve_instance}/vs-plain"
    imgs, _ = catalogue_images(10)
    answers = [
        api.post(
            f"{url}/search", params={"k": 10}, files={"image": ("q.png", png_bytes(i))}, timeout=30
        ).json()
        for i in imgs
    ]
    serve.delete("vs_plain")
    return answers


@pytest.mark.parametrize("fault", ["error", "hang"])
def test_faulty_shadow_leaves_primary_unchanged(serve_instance, tiny_store, reference, fault):

    args = VisualSearchArgs(
        artifact_store=str(tiny_store),
        live_log=None,
        fault_injection={"ShadowImageEncoder": fault},
        shadow={"backend": "onnx", "share": 1.0, "timeout_s": 3.0},
    )
    name = f"vs_{fault}"
    serve.run(build_app(args), name=name, route_prefix=f"/vs-{fault}")
    url = f"{serve_instance}/vs-{fault}"
    try:
        imgs, _ = catalogue_images(10)
        for img, ref in zip(imgs, reference, strict=True):
            t0 = time.perf_counter()
            r = api.post(
                f"{url}/search",
                params={"k": 10},
                files={"image": ("q.png", png_bytes(img))},
                timeout=30,
            )
            elapsed = time.perf_counter() - t0
            assert r.status_code == 200, r.text
            hits = [(h["image_id"], h["score"]) for h in r.json()["results"]]
            assert hits == [(h["image_id"], h["score"]) for h in ref["results"]]  # (urls: prefix)
            assert elapsed < 2.5  # waiting on the hanging shadow would take >= 3 s
        deadline = time.time() + 30
        while time.time() < deadline:
            rep = api.get(f"{url}/shadow", timeout=10).json()
            if rep["errors"] + rep["timeouts"] >= 10:
                break
            time.sleep(0.5)
        assert rep["completed"] == 0
        if fault == "error":
            assert rep["errors"] == 10 and rep["last_error"] == "RuntimeError"
        else:
            assert rep["timeouts"] == 10
    finally:
        serve.delete(name)


def test_missing_artifact_fails_fast_naming_it(tiny_store, tmp_path):

    with pytest.raises(ArtifactError, match="no artifact 'visual_search'"):
        build_app(VisualSearchArgs(artifact_store=str(tmp_path)))
    with pytest.raises(ArtifactError, match="v-nope"):
        build_app(
            VisualSearchArgs(
                artifact_store=str(tiny_store),
                model={"artifact": "visual_search", "version": "v-nope"},
            )
        )
