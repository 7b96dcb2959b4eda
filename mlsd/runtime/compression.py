"""Model compression: ONNX export (fp32) and dynamic int8 quantisation of the graph."""

from __future__ import annotations

import inspect
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch


def export_onnx(
    model: torch.nn.Module,
    example: torch.Tensor | Mapping[str, torch.Tensor],
    path: str | os.PathLike,
    input_name: str = "image",
    output_name: str = "embedding",
    dynamic: Mapping[str, Sequence[int]] | None = None,
) -> Path:
    """Export for onnxruntime / Triton.

    One tensor input: the dynamo exporter with a dynamic batch axis (needs onnxscript). Named
    inputs (a model taking a dict): graph inputs of the same names, ``dynamic`` naming the
    variable axes of each (default: axis 0 of every input).
    """
    path = Path(path)
    model = model.eval()
    if not isinstance(example, Mapping):
        batch = torch.export.Dim("batch", min=1, max=4096)
        torch.onnx.export(
            model,
            (example,),
            str(path),
            input_names=[input_name],
            output_names=[output_name],
            dynamic_shapes={next(iter(_forward_params(model))): {0: batch}},
            dynamo=True,
            external_data=False,
        )
        return path
    names = list(example)
    dynamic = dynamic or {n: [0] for n in names}
    wrapped = _NamedInputs(model, names).eval()
    torch.onnx.export(
        wrapped,
        tuple(example[n] for n in names),
        str(path),
        input_names=names,
        output_names=[output_name],
        dynamic_axes={
            **{n: {a: f"{n}_{a}" for a in dynamic.get(n, [])} for n in names},
            output_name: {0: "out_0"},
        },
        dynamo=False,
        opset_version=18,  # ScatterElements with reduction="add" (index_add with repeats)
    )
    return path


def _forward_params(model: torch.nn.Module) -> list[str]:

    return list(inspect.signature(model.forward).parameters)


class _NamedInputs(torch.nn.Module):
    """Positional tensors -> the dict a named-input model takes (for the exporter)."""

    def __init__(self, model: torch.nn.Module, names: list[str]):
        super().__init__()
        self.model, self.names = model, names

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        return self.model(dict(zip(self.names, tensors, strict=True)))


def quantize_int8(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    calibration: Iterable[np.ndarray],
    exclude: Sequence[str] = (),
) -> Path:
    """Static int8 quantisation (QDQ, per-channel weights) calibrated on real inputs.

    Static rather than dynamic: dynamic quantisation only covers MatMul/Gemm, and a CNN's
    cost is in its convolutions. ``exclude``: nodes (by name) left in fp32, e.g. a detector's
    output convolutions, cheap and where 8 bits cost the most accuracy.
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
        nodes_to_exclude=list(exclude),
    )
    pre.unlink(missing_ok=True)
    return Path(dst)
