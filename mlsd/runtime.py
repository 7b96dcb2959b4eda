"""One model-runner interface, several backends; plus model compression (ONNX + int8).

A runner maps a float32 batch (B, ...) to a float32 output (B, D). The backend is
configuration: ``torch`` (eager, the reference), ``onnx`` (onnxruntime, fp32 or int8). A
``triton`` backend (KServe v2 protocol via tritonclient) plugs into :data:`BACKENDS` in a
later issue; asking for an unregistered backend names the ones there are.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Protocol

import numpy as np
import torch


class ModelRunner(Protocol):
    backend: str

    def run(self, x: np.ndarray) -> np.ndarray: ...


class TorchRunner:
    backend = "torch"

    def __init__(
        self, model: torch.nn.Module, num_threads: int | None = None, device: str = "auto"
    ):
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.model = model.eval().to(self.device)
        if num_threads:
            torch.set_num_threads(num_threads)

    @torch.inference_mode()
    def run(self, x: np.ndarray) -> np.ndarray:
        t = torch.as_tensor(np.asarray(x, dtype=np.float32)).to(self.device)
        return self.model(t).float().cpu().numpy()


class OnnxRunner:
    backend = "onnx"

    def __init__(self, path: str | os.PathLike, num_threads: int | None = None):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        if num_threads:
            opts.intra_op_num_threads = num_threads
        opts.inter_op_num_threads = 1
        providers = [
            p
            for p in ("CUDAExecutionProvider", "CPUExecutionProvider")
            if p in ort.get_available_providers()
        ]
        self.session = ort.InferenceSession(str(path), opts, providers=providers)
        self.input_name = self.session.get_inputs()[0].name
        self.path = str(path)

    def run(self, x: np.ndarray) -> np.ndarray:
        feed = {self.input_name: np.ascontiguousarray(x, dtype=np.float32)}
        return self.session.run(None, feed)[0]


BACKENDS: dict[str, Callable[..., ModelRunner]] = {"torch": TorchRunner, "onnx": OnnxRunner}


def make_runner(backend: str, **kwargs) -> ModelRunner:
    if backend not in BACKENDS:
        raise ValueError(f"unknown runner backend {backend!r}; available: {sorted(BACKENDS)}")
    return BACKENDS[backend](**kwargs)


# model compression ---------------------------------------------------------------------------
def export_onnx(model: torch.nn.Module, example: torch.Tensor, path: str | os.PathLike) -> Path:
    """Export with a dynamic batch axis (the dynamo exporter; needs onnxscript)."""
    path = Path(path)
    model = model.eval()
    batch = torch.export.Dim("batch", min=1, max=4096)
    torch.onnx.export(
        model,
        (example,),
        str(path),
        input_names=["image"],
        output_names=["embedding"],
        dynamic_shapes={"x": {0: batch}},
        dynamo=True,
        external_data=False,
    )
    return path


def quantize_int8(
    src: str | os.PathLike, dst: str | os.PathLike, calibration: Iterable[np.ndarray]
) -> Path:
    """Static int8 quantisation (QDQ, per-channel weights) calibrated on real inputs.

    Static rather than dynamic: dynamic quantisation only covers MatMul/Gemm, and a CNN's
    cost is in its convolutions.
    """
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    batches = [np.ascontiguousarray(b, dtype=np.float32) for b in calibration]
    if not batches:
        raise ValueError("int8 calibration needs at least one batch of real inputs")

    import onnx

    input_name = onnx.load(str(src)).graph.input[0].name

    class _Reader(CalibrationDataReader):
        def __init__(self):
            self._it = iter(batches)

        def get_next(self):
            b = next(self._it, None)
            return None if b is None else {input_name: b}

    pre = Path(dst).with_suffix(".pre.onnx")
    quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
    quantize_static(
        str(pre),
        str(dst),
        _Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
    )
    pre.unlink(missing_ok=True)
    return Path(dst)
