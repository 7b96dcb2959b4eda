"""One model loader: every system's model goes through ``mlsd.runtime.load_runner`` with its
own table of backends, and an app refuses at build time a backend its model cannot be served
by (it used to fail inside a replica, or be ignored while reported)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from apps.harmful_content import HarmfulContentArgs
from apps.recommendation import RecommendationArgs
from apps.video_search import VideoSearchArgs
from apps.visual_search import VisualSearchArgs
from mlsd.runtime import export_onnx, load_runner


class _Files:
    def __init__(self, root):
        self.root = root

    def file(self, name):
        return self.root / name


def test_the_loader_runs_torch_and_onnx_alike_and_names_what_it_lacks(tmp_path):
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Tanh()).eval()
    x = np.random.default_rng(0).normal(size=(2, 4)).astype(np.float32)
    export_onnx(module, torch.as_tensor(x), tmp_path / "m.onnx")
    files = {"torch": "m.pt", "onnx": "m.onnx"}
    art = _Files(tmp_path)
    out = {b: load_runner(art, b, files, lambda: module, device="cpu").run(x) for b in files}
    np.testing.assert_allclose(out["onnx"], out["torch"], atol=1e-5)
    with pytest.raises(ValueError, match="'onnx-int8' is not one this system serves: torch, onnx"):
        load_runner(art, "onnx-int8", files, lambda: module)


@pytest.mark.parametrize(
    "args, backend, ok",
    [
        (VisualSearchArgs, "triton-int8", True),
        (VisualSearchArgs, "onnx-int8", True),
        (HarmfulContentArgs, "triton", True),
        (HarmfulContentArgs, "onnx-int8", False),  # no int8 classifier in the artifact
        (HarmfulContentArgs, "triton-int8", False),
        (RecommendationArgs, "onnx", True),
        (RecommendationArgs, "triton", False),
        (VideoSearchArgs, "torch", True),
        (VideoSearchArgs, "onnx", True),  # exported from the torch encoder when built
        (VideoSearchArgs, "onnx-int8", False),
    ],
)
def test_an_app_refuses_a_backend_its_model_is_not_served_by(args, backend, ok):
    model = {"artifact": "m", "backend": backend}
    if ok:
        assert args(model=model, auth="none").model.backend == backend
        return
    with pytest.raises(ValidationError, match=f"model.backend '{backend}'"):
        args(model=model, auth="none")
    with pytest.raises(ValidationError, match=f"shadow.backend '{backend}'"):
        args(shadow={"backend": backend}, auth="none")
