"""The in-process runners (torch, onnxruntime), the backend table and the one model loader."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

import numpy as np
import torch

from mlsd.runtime import devices
from mlsd.runtime.base import Inputs, ModelRunner, RunnerError, as_numpy
from mlsd.runtime.triton import TritonRunner


def _to_tensor(v: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    if not isinstance(v, torch.Tensor):
        a = np.asarray(v)
        v = torch.from_numpy(
            np.ascontiguousarray(a.astype(np.float32) if a.dtype == np.float64 else a)
        )
    return v if v.device == device else devices.place(v, device)


class TorchRunner:
    backend = "torch"

    def __init__(
        self,
        model: torch.nn.Module,
        device: str = "auto",
        num_threads: int | None = None,
        gpu_ids: Sequence | None = None,
    ):
        self.device = devices.resolve_device(device, gpu_ids)
        self._device = torch.device(self.device)
        self.model = devices.place(model.eval(), self._device)
        if num_threads:
            torch.set_num_threads(int(num_threads))

    @torch.inference_mode()
    def run(self, x: Inputs) -> np.ndarray:
        if isinstance(x, Mapping):
            out = self.model({k: _to_tensor(v, self._device) for k, v in x.items()})
        else:
            out = self.model(_to_tensor(np.asarray(x, dtype=np.float32), self._device))
        return out.float().cpu().numpy()


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

        self.device = devices.resolve_device(device, gpu_ids)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(num_threads or devices.resolve_threads())
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
            feed = {
                n: np.ascontiguousarray(as_numpy(x[n]), dtype=t) for n, t in self.inputs.items()
            }
        else:
            feed = {self.input_name: np.ascontiguousarray(x, dtype=np.float32)}
        return self.session.run(None, feed)[0]


# Triton -----------------------------------------------------------------------------------
async def arun(runner: ModelRunner, x: Inputs) -> np.ndarray:
    """Await one inference: the runner's own ``arun`` (Triton's asyncio client), else its
    blocking ``run`` in a worker thread, so a replica's event loop is never blocked."""
    own = getattr(runner, "arun", None)
    if own is not None:
        return await own(x)
    return await asyncio.to_thread(runner.run, x)


def _triton(model=None, path=None, server: Mapping | None = None, **kw) -> TritonRunner:
    server = dict(_need(server, "triton", "server (url, model_name, ...)"))
    return TritonRunner(**server)


BACKENDS: dict[str, Callable[..., ModelRunner]] = {
    "torch": lambda model=None, path=None, **kw: TorchRunner(_need(model, "torch", "model"), **kw),
    "onnx": lambda model=None, path=None, **kw: OnnxRunner(_need(path, "onnx", "path"), **kw),
    "triton": _triton,
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
    server: Mapping | None = None,
) -> ModelRunner:
    """The one way every model is run: ``torch`` takes the module, ``onnx`` its exported file,
    ``triton`` a ``server`` mapping (:class:`TritonRunner`'s arguments: url, model_name, ...)."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown runner backend {backend!r}; available: {sorted(BACKENDS)}")
    kw = {"server": server} if server is not None else {}
    return BACKENDS[backend](
        model=model, path=path, device=device, num_threads=num_threads, gpu_ids=gpu_ids, **kw
    )


BACKEND_NAMES = ("torch", "onnx", "onnx-int8", "triton", "triton-int8")


class HasFiles(Protocol):
    def file(self, name: str) -> os.PathLike: ...


def load_runner(
    artifact: HasFiles,
    backend: str,
    files: Mapping[str, str],
    torch_module: Callable[[], torch.nn.Module],
    *,
    device: str = "auto",
    num_threads: int | None = None,
    gpu_ids: Sequence | None = None,
    server: Mapping | None = None,
    what: str = "model",
) -> ModelRunner:
    """The one model loader: an artifact's model behind the runner ``backend`` names.

    ``files`` is the system's table of the backends it serves, each with the artifact file it
    runs (``torch``: the module's weights, which ``torch_module`` loads; ``onnx`` /
    ``onnx-int8``: the exported graph; ``triton`` / ``triton-int8``: the graph a Triton server
    serves, reached through ``server``). A backend outside the table is a ``ValueError`` naming
    the ones it has: an app checks it at build time, never inside a replica."""
    if backend not in files:
        raise ValueError(
            f"{what} backend {backend!r} is not one this system serves: {', '.join(files)}"
        )
    if backend.startswith("triton"):
        return make_runner("triton", server=server)
    common = {"device": device, "num_threads": num_threads, "gpu_ids": gpu_ids}
    if backend == "torch":
        return make_runner("torch", model=torch_module(), **common)
    return make_runner("onnx", path=artifact.file(files[backend]), **common)


def warm_up(runner: ModelRunner, example: Inputs) -> np.ndarray:
    """One inference at start-up, so the first request does not pay for lazy initialisation."""
    return runner.run(example)
