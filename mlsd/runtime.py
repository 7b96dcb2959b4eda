"""One model-runner interface, several backends; where a model runs; model compression.

A runner maps a batch to a float32 output (B, ...). Its input is one float array, or a mapping
of named arrays for models with several inputs (the ranker's features, a transformer's token
ids and mask); a model with named inputs takes one dict of tensors in torch, and its ONNX
graph has inputs of the same names. The backend is configuration (:func:`make_runner`):
``torch`` (eager, the reference), ``onnx`` (onnxruntime, fp32 or int8) and ``triton`` (a
model on a Triton Inference Server, KServe v2 over HTTP or gRPC; :class:`TritonRunner`).
Every runner has ``run`` (blocking, for worker threads) and :func:`arun` awaits it (a
Triton runner awaits the asyncio client; the in-process backends run in a worker thread).

Where it runs: ``device="auto"`` is the GPU the caller was given (a Ray replica or task passes
the accelerator ids Ray assigned it), else the CPU. How many threads: the CPUs the process was
given (Ray's assignment, else the process's CPU affinity), never the machine's core count;
thread pools larger than the CPUs a process really gets spin on cores other work is using.
"""

from __future__ import annotations

import asyncio
import inspect
import math
import os
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Protocol

import faiss
import numpy as np
import torch
from threadpoolctl import threadpool_limits

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
    faiss.omp_set_num_threads(n)
    threadpool_limits(n)
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


# Triton -----------------------------------------------------------------------------------
_TRITON_TO_NP = {
    "FP32": np.float32,
    "FP64": np.float64,
    "FP16": np.float16,
    "INT64": np.int64,
    "INT32": np.int32,
    "INT8": np.int8,
    "UINT8": np.uint8,
    "BOOL": np.bool_,
}


class TritonRunner:
    """A model served by a Triton Inference Server (any KServe-v2 server): the same ``run``
    as the in-process runners, so the backend stays configuration.

    Input and output names, datatypes and shapes come from the model's metadata (not its
    config, which other KServe-v2 servers lack); a server or model that is not ready is a
    :class:`RunnerError` naming the URL and model. ``run`` uses a blocking client (one per
    thread: the HTTP client is gevent-based); ``arun`` the asyncio client of the same
    protocol, one per event loop (inside a Serve replica, the replica's loop).

    ``expect``: parameters the model's config must carry (the exporter writes the artifact
    label there), checked where the server has a config endpoint; a mismatch means the server
    holds another model than the one this app pinned.
    """

    backend = "triton"

    def __init__(
        self,
        url: str,
        model_name: str,
        model_version: str = "",
        protocol: str = "grpc",
        timeout_s: float = 30.0,
        expect: Mapping[str, str] | None = None,
        output: str | None = None,
    ):
        if protocol not in ("http", "grpc"):
            raise ValueError(f"triton protocol must be http or grpc, not {protocol!r}")
        self.url, self.model_name, self.model_version = url, model_name, str(model_version)
        self.protocol, self.timeout_s = protocol, float(timeout_s)
        self.device = "triton"  # where the server placed its instances is the server's business
        self._local = threading.local()
        self._aio: dict[int, object] = {}
        client = self._client()
        where = f"Triton at {protocol}://{url}"
        try:
            live = client.is_server_live()
        except Exception as e:
            raise RunnerError(f"{where} is not reachable: {e}") from e
        if not live:
            raise RunnerError(f"{where} is not live")
        label = f"{model_name!r}" + (f" version {self.model_version}" if self.model_version else "")
        try:
            ready = client.is_model_ready(model_name, self.model_version)
        except Exception as e:
            raise RunnerError(f"{where}: cannot ask whether model {label} is ready: {e}") from e
        if not ready:
            raise RunnerError(
                f"{where}: model {label} is not ready (not in its repository, or "
                "failed to load: see the server's log)"
            )
        meta = self._metadata(client)
        self.inputs = {
            i["name"]: (_TRITON_TO_NP.get(i["datatype"], np.float32), i["datatype"])
            for i in meta["inputs"]
        }
        self._rank = {i["name"]: len(i["shape"]) for i in meta["inputs"]}  # batch axis included
        self.outputs = [o["name"] for o in meta["outputs"]]
        self.output = output or self.outputs[0]
        if self.output not in self.outputs:
            raise RunnerError(f"{where}: model {label} has no output {self.output!r}")
        self.input_name = next(iter(self.inputs))
        params = self._parameters(client)
        # outputs with one value per example: Triton shows them as (B, 1) (config dims [1]
        # reshaped to []); the runner gives back the model's own (B,)
        self._scalar = set(filter(None, (params or {}).get("scalar_outputs", "").split(",")))
        if expect and params is not None:  # servers without a config endpoint: nothing to check
            wrong = {k: (v, params.get(k)) for k, v in expect.items() if params.get(k) != v}
            if wrong:
                raise RunnerError(
                    f"{where}: model {label} is not the one pinned: "
                    + ", ".join(
                        f"{k}: server has {h!r}, pinned {v!r}" for k, (v, h) in wrong.items()
                    )
                )

    # clients ---------------------------------------------------------------------------------
    def _module(self, aio: bool):
        if self.protocol == "http":
            import tritonclient.http as mod
            import tritonclient.http.aio as amod
        else:
            import tritonclient.grpc as mod
            import tritonclient.grpc.aio as amod
        return amod if aio else mod

    def _client(self):
        c = getattr(self._local, "client", None)
        if c is None:
            mod = self._module(aio=False)
            if self.protocol == "http":
                c = mod.InferenceServerClient(
                    self.url, connection_timeout=self.timeout_s, network_timeout=self.timeout_s
                )
            else:
                c = mod.InferenceServerClient(self.url)
            self._local.client = c
        return c

    def _aclient(self):
        loop = id(asyncio.get_running_loop())
        c = self._aio.get(loop)
        if c is None:
            c = self._aio[loop] = self._module(aio=True).InferenceServerClient(self.url)
        return c

    def _metadata(self, client) -> dict:
        if self.protocol == "grpc":
            return client.get_model_metadata(self.model_name, self.model_version, as_json=True)
        return client.get_model_metadata(self.model_name, self.model_version)

    def _parameters(self, client) -> dict | None:
        """The model config's string parameters; None where the server has no config API.
        Also reads the config's ``max_batch_size`` (0: unknown or no limit)."""
        self.max_batch_size = 0
        try:
            if self.protocol == "grpc":
                cfg = client.get_model_config(self.model_name, self.model_version, as_json=True)
                cfg = cfg.get("config", cfg)
            else:
                cfg = client.get_model_config(self.model_name, self.model_version)
        except Exception:
            return None
        self.max_batch_size = int(cfg.get("max_batch_size") or 0)
        return {k: v.get("string_value") for k, v in (cfg.get("parameters") or {}).items()}

    def _chunks(self, x: Inputs) -> list[Inputs]:
        """A batch over the model's max_batch_size as requests the server accepts."""
        n = len(next(iter(x.values()))) if isinstance(x, Mapping) else len(x)
        m = self.max_batch_size
        if m <= 0 or n <= m:
            return [x]
        if isinstance(x, Mapping):
            return [{k: v[s : s + m] for k, v in x.items()} for s in range(0, n, m)]
        return [x[s : s + m] for s in range(0, n, m)]

    # inference -------------------------------------------------------------------------------
    def _request(self, x: Inputs, aio: bool):
        mod = self._module(aio=False)  # InferInput / InferRequestedOutput are shared by aio
        if isinstance(x, Mapping):
            missing = set(self.inputs) - set(x)
            if missing:
                raise RunnerError(f"missing model inputs {sorted(missing)}")
            arrays = {
                n: np.ascontiguousarray(_numpy(x[n]), dtype=t) for n, (t, _) in self.inputs.items()
            }
        else:
            t = self.inputs[self.input_name][0]
            arrays = {self.input_name: np.ascontiguousarray(_numpy(x), dtype=t)}
        inputs = []
        for name, a in arrays.items():
            if a.ndim == self._rank[name] - 1:  # one value per example: Triton's dims are [1]
                a = a[:, None]
            i = mod.InferInput(name, list(a.shape), self.inputs[name][1])
            if self.protocol == "http":
                i.set_data_from_numpy(a, binary_data=True)
            else:
                i.set_data_from_numpy(a)
            inputs.append(i)
        if self.protocol == "http":
            outputs = [mod.InferRequestedOutput(self.output, binary_data=True)]
        else:
            outputs = [mod.InferRequestedOutput(self.output)]
        return inputs, outputs

    def _result(self, res) -> np.ndarray:
        out = res.as_numpy(self.output)
        if out is None:
            raise RunnerError(f"Triton model {self.model_name!r} returned no {self.output!r}")
        return out.reshape(len(out)) if self.output in self._scalar else out

    def run(self, x: Inputs) -> np.ndarray:
        parts = self._chunks(x)
        if len(parts) > 1:
            return np.concatenate([self.run(p) for p in parts])
        inputs, outputs = self._request(x, aio=False)
        kw = {"client_timeout": self.timeout_s} if self.protocol == "grpc" else {}
        try:
            res = self._client().infer(
                self.model_name, inputs, model_version=self.model_version, outputs=outputs, **kw
            )
        except Exception as e:
            raise RunnerError(f"Triton inference on {self.model_name!r} failed: {e}") from e
        return self._result(res)

    async def arun(self, x: Inputs) -> np.ndarray:
        parts = self._chunks(x)
        if len(parts) > 1:
            return np.concatenate(await asyncio.gather(*(self.arun(p) for p in parts)))
        inputs, outputs = self._request(x, aio=True)
        kw = (
            {"client_timeout": self.timeout_s}
            if self.protocol == "grpc"
            else {"timeout": int(self.timeout_s)}
        )
        try:
            res = await self._aclient().infer(
                self.model_name, inputs, model_version=self.model_version, outputs=outputs, **kw
            )
        except Exception as e:
            raise RunnerError(f"Triton inference on {self.model_name!r} failed: {e}") from e
        return self._result(res)

    async def aclose(self) -> None:
        """Close this event loop's asyncio client (a test's loop ends; a replica's does not)."""
        c = self._aio.pop(id(asyncio.get_running_loop()), None)
        if c is not None:
            await c.close()


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
