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

The package, by concern: ``base`` (inputs, protocol, error), ``devices`` (devices and
threads), ``runners`` (torch, onnxruntime, the backend table, ``load_runner``), ``triton``
(a Triton server's model), ``compression`` (ONNX export, int8).
"""

from __future__ import annotations

from mlsd.runtime.base import Inputs, ModelRunner, RunnerError, as_numpy
from mlsd.runtime.compression import export_onnx, quantize_int8
from mlsd.runtime.devices import (
    assigned_resources,
    available_cpus,
    cuda_available,
    place,
    resolve_device,
    resolve_threads,
    set_process_threads,
)
from mlsd.runtime.runners import (
    BACKEND_NAMES,
    BACKENDS,
    HasFiles,
    OnnxRunner,
    TorchRunner,
    arun,
    load_runner,
    make_runner,
    warm_up,
)
from mlsd.runtime.triton import TritonRunner

__all__ = [
    "BACKENDS",
    "BACKEND_NAMES",
    "HasFiles",
    "Inputs",
    "ModelRunner",
    "OnnxRunner",
    "RunnerError",
    "TorchRunner",
    "TritonRunner",
    "arun",
    "as_numpy",
    "assigned_resources",
    "available_cpus",
    "cuda_available",
    "export_onnx",
    "load_runner",
    "make_runner",
    "place",
    "quantize_int8",
    "resolve_device",
    "resolve_threads",
    "set_process_threads",
    "warm_up",
]
