"""One model-runner interface, several backends; where a model runs; model compression.

A runner maps a batch to a float32 output (B, ...). Its input is one float array, or a mapping
of named arrays for models with several inputs (the ranker's features, a transformer's token
ids and mask); a model with named inputs takes one dict of tensors in torch, and its ONNX
graph has inputs of the same names. The backend is configuration (:func:`make_runner`):
``torch`` (eager, the reference) and ``onnx`` (onnxruntime, fp32 or int8); a ``triton``
backend registers itself in :data:`BACKENDS`.

Where it runs: ``device="auto"`` is the GPU the caller was given (a Ray replica or task passes
the accelerator ids Ray assigned it), else the CPU. How many threads: the CPUs the process was
given (Ray's assignment, else the process's CPU affinity), never the machine's core count;
thread pools larger than the CPUs a process really gets spin on cores other work is using.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

Inputs = np.ndarray | Mapping[str, np.ndarray | torch.Tensor]


class RunnerError(RuntimeError):
    """A model that cannot be loaded or run by its backend; the message says which."""


# where and with how many threads -------------------------------------------------------------
def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask), not the machine's core count."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def resolve_threads(cpus: float | None = None) -> int:
    """Thread-pool size for ``cpus`` CPUs (a Ray assignment may be fractional: at least one),
    never more than the process may use. ``None``: the process's affinity."""
    n = available_cpus()
    if cpus is None or cpus <= 0:
        return n
    return max(1, min(n, int(math.floor(cpus + 1e-9))))


def assigned_resources(ctx) -> tuple[list[str] | None, float | None]:
    """(GPU ids, CPUs) that a scheduler's runtime context says this process was given (Ray's
    ``ray.get_runtime_context()``); (None, None) outside a scheduler."""
    if ctx is None:
        return None, None
    gpu_ids = [str(g) for g in ctx.get_accelerator_ids().get("GPU", [])]
    return gpu_ids, ctx.get_assigned_resources().get("CPU")


def set_process_threads(n: int) -> int:
    """Size every thread pool this process uses (torch, faiss, BLAS/OpenMP) to ``n``."""
    n = max(1, int(n))
    torch.set_num_threads(n)
    try:
        import faiss

        faiss.omp_set_num_threads(n)
    except ImportError:  # pragma: no cover - faiss is a dependency
        pass
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(n)
    except ImportError:  # pragma: no cover
        pass
    return n


def cuda_available() -> bool:
    return torch.cuda.is_available()


def resolve_device(device: str = "auto", gpu_ids: Sequence | None = None) -> str:
    """``auto``: ``cuda`` when this process was given a GPU, else ``cpu``.

    ``gpu_ids``: the accelerator ids the scheduler assigned (Ray's ``get_accelerator_ids()``);
    an empty list means none was assigned, so a visible GPU belongs to someone else; ``None``
    means no scheduler: use a GPU if one is visible. An explicit ``cuda`` without one is an
    error, not a silent fall-back.
    """
    if device == "auto":
        if gpu_ids is not None and len(gpu_ids) == 0:
            return "cpu"
        return "cuda" if cuda_available() else "cpu"
    if device.startswith("cuda") and not cuda_available():
        raise RunnerError(f"device {device!r} asked for, but no CUDA device is visible")
    return device


def place(obj, device: str | torch.device):
    """Move a model or a tensor to its device: the one place it happens, so a test can observe
    every placement (and simulate a GPU on a machine without one)."""
    return obj.to(device)


# runners -------------------------------------------------------------------------------------
class ModelRunner(Protocol):
    backend: str
    device: str

    def run(self, x: Inputs) -> np.ndarray: ...


def _to_tensor(v: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    if not isinstance(v, torch.Tensor):
        a = np.asarray(v)
        v = torch.from_numpy(
            np.ascontiguousarray(a.astype(np.float32) if a.dtype == np.float64 else a)
        )
    return v if v.device == device else place(v, device)


class TorchRunner:
    backend = "torch"

    def __init__(
        self,
        model: torch.nn.Module,
        device: str = "auto",
        num_threads: int | None = None,
        gpu_ids: Sequence | None = None,
    ):
        self.device = resolve_device(device, gpu_ids)
        self._device = torch.device(self.device)
        self.model = place(model.eval(), self._device)
        if num_threads:
            torch.set_num_threads(int(num_threads))

    @torch.inference_mode()
    def run(self, x: Inputs) -> np.ndarray:
        if isinstance(x, Mapping):
            out = self.model({k: _to_tensor(v, self._device) for k, v in x.items()})
        else:
            out = self.model(_to_tensor(np.asarray(x, dtype=np.float32), self._device))
        return out.float().cpu().numpy()


def _numpy(v) -> np.ndarray:
    return v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v)


_ORT_TYPES = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(bool)": np.bool_,
    "tensor(uint8)": np.uint8,
}


class OnnxRunner:
    backend = "onnx"

    def __init__(
        self,
        path: str | os.PathLike | bytes,
        device: str = "auto",
        num_threads: int | None = None,
        gpu_ids: Sequence | None = None,
    ):
        import onnxruntime as ort

        self.device = resolve_device(device, gpu_ids)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(num_threads or resolve_threads())
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3  # errors only: unused-initializer notes flood replica logs
        # idle threads sleep instead of spinning: a replica shares its cores with others
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        wanted = ["CPUExecutionProvider"]
        if self.device.startswith("cuda"):
            wanted.insert(0, "CUDAExecutionProvider")
        providers = [p for p in wanted if p in ort.get_available_providers()]
        if self.device.startswith("cuda") and providers[0] != "CUDAExecutionProvider":
            raise RunnerError("a GPU was assigned but onnxruntime has no CUDAExecutionProvider")
        src = path if isinstance(path, bytes) else str(path)
        try:
            self.session = ort.InferenceSession(src, opts, providers=providers)
        except Exception as e:
            name = "<bytes>" if isinstance(path, bytes) else str(path)
            raise RunnerError(f"cannot load ONNX model {name}: {e}") from e
        self.inputs = {
            i.name: _ORT_TYPES.get(i.type, np.float32) for i in self.session.get_inputs()
        }
        self.input_name = next(iter(self.inputs))
        self.path = None if isinstance(path, bytes) else str(path)

    def run(self, x: Inputs) -> np.ndarray:
        if isinstance(x, Mapping):
            missing = set(self.inputs) - set(x)
            if missing:
                raise RunnerError(f"missing model inputs {sorted(missing)}")
            feed = {n: np.ascontiguousarray(_numpy(x[n]), dtype=t) for n, t in self.inputs.items()}
        else:
            feed = {self.input_name: np.ascontiguousarray(x, dtype=np.float32)}
        return self.session.run(None, feed)[0]


BACKENDS: dict[str, Callable[..., ModelRunner]] = {
    "torch": lambda model=None, path=None, **kw: TorchRunner(_need(model, "torch", "model"), **kw),
    "onnx": lambda model=None, path=None, **kw: OnnxRunner(_need(path, "onnx", "path"), **kw),
}


def _need(value, backend: str, what: str):
    if value is None:
        raise ValueError(f"the {backend!r} runner needs a {what}")
    return value


def make_runner(
    backend: str,
    *,
    model: torch.nn.Module | None = None,
    path: str | os.PathLike | bytes | None = None,
    device: str = "auto",
    num_threads: int | None = None,
    gpu_ids: Sequence | None = None,
) -> ModelRunner:
    """The one way every model is run: ``torch`` takes the module, ``onnx`` its exported file."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown runner backend {backend!r}; available: {sorted(BACKENDS)}")
    return BACKENDS[backend](
        model=model, path=path, device=device, num_threads=num_threads, gpu_ids=gpu_ids
    )


def warm_up(runner: ModelRunner, example: Inputs) -> np.ndarray:
    """One inference at start-up, so the first request does not pay for lazy initialisation."""
    return runner.run(example)


# model compression ---------------------------------------------------------------------------
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
    import inspect

    return list(inspect.signature(model.forward).parameters)


class _NamedInputs(torch.nn.Module):
    """Positional tensors -> the dict a named-input model takes (for the exporter)."""

    def __init__(self, model: torch.nn.Module, names: list[str]):
        super().__init__()
        self.model, self.names = model, names

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        return self.model(dict(zip(self.names, tensors, strict=True)))


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
