"""A Triton model repository written from an artifact's ONNX files (model compression, served).

Two variants of the same layout ``<repo>/<model>/config.pbtxt`` + ``<repo>/<model>/<v>/``:

- ``onnxruntime`` (clusters): ``platform: "onnxruntime_onnx"``, ``max_batch_size``,
  ``dynamic_batching``, ``instance_group`` ``KIND_GPU`` (or ``KIND_CPU``); each ONNX file is a
  numbered version (1 = fp32, 2 = int8, ...) holding ``model.onnx``. NVIDIA's Triton container
  runs it with its native onnxruntime (or TensorRT) backend.
- ``python`` (a CPU-only machine, whose Triton from PyPI has the Python backend only): the same
  files and versions, run by a ``model.py`` that loads ``model.onnx`` with onnxruntime and runs
  each dynamic batch as one session call.

Inputs and outputs (names, datatypes, per-example dims, ``-1`` where dynamic) come from the
ONNX graph, so the config cannot disagree with the file. The artifact label goes into the
config's ``parameters`` so a client can check the server holds the model it pinned.
"""

from __future__ import annotations

import argparse
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import text_format

from mlsd.artifacts import ArtifactStore

VARIANTS = ("onnxruntime", "python")
# runner backend -> repository version: the exporter writes an artifact's fp32 file as version
# 1 and its int8 file (where it has one) as version 2
TRITON_VERSIONS = {"triton": 1, "triton-int8": 2}

_ONNX_TO_TRITON = {  # onnx.TensorProto enum -> Triton config data_type
    1: "TYPE_FP32",
    2: "TYPE_UINT8",
    3: "TYPE_INT8",
    6: "TYPE_INT32",
    7: "TYPE_INT64",
    9: "TYPE_BOOL",
    10: "TYPE_FP16",
    11: "TYPE_FP64",
}


@dataclass(frozen=True)
class TensorSpec:
    name: str
    data_type: str  # TYPE_FP32, ...
    dims: tuple[int, ...]  # per example (no batch axis); -1 where dynamic


def onnx_io(path: str | os.PathLike) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """(inputs, outputs) of an ONNX graph, the batch axis (axis 0) dropped."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    init = {i.name for i in graph.initializer}

    def spec(v) -> TensorSpec:
        t = v.type.tensor_type
        if t.elem_type not in _ONNX_TO_TRITON:
            raise ValueError(f"{path}: tensor {v.name!r} has an ONNX type Triton configs lack")
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim]
        if not dims:
            raise ValueError(f"{path}: tensor {v.name!r} has no batch axis")
        return TensorSpec(v.name, _ONNX_TO_TRITON[t.elem_type], tuple(dims[1:]))

    inputs = [spec(v) for v in graph.input if v.name not in init]
    return inputs, [spec(v) for v in graph.output]


def _tensors(kind: str, specs: list[TensorSpec]) -> str:
    rows = []
    for s in specs:
        dims = ", ".join(str(d) for d in s.dims) or "1"
        reshape = " reshape: { shape: [ ] }" if not s.dims else ""
        rows.append(f'  {{ name: "{s.name}" data_type: {s.data_type} dims: [ {dims} ]{reshape} }}')
    return f"{kind} [\n" + ",\n".join(rows) + "\n]\n"


def model_config(
    name: str,
    inputs: list[TensorSpec],
    outputs: list[TensorSpec],
    variant: str = "onnxruntime",
    max_batch_size: int = 64,
    max_queue_delay_us: int = 2000,
    instances: int = 1,
    kind: str = "KIND_GPU",
    parameters: Mapping[str, str] | None = None,
) -> str:
    """``config.pbtxt`` text (Triton's ModelConfig in protobuf text format)."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, not {variant!r}")
    if kind not in ("KIND_GPU", "KIND_CPU"):
        raise ValueError(f"instance kind must be KIND_GPU or KIND_CPU, not {kind!r}")
    if variant == "python":
        kind = "KIND_CPU"  # the Python backend's onnxruntime runs where its stub runs
    head = 'platform: "onnxruntime_onnx"\n' if variant == "onnxruntime" else 'backend: "python"\n'
    params = "".join(
        f'parameters {{ key: "{k}" value: {{ string_value: "{v}" }} }}\n'
        for k, v in (parameters or {}).items()
    )
    return (
        f'name: "{name}"\n'
        + head
        + f"max_batch_size: {int(max_batch_size)}\n"
        + "version_policy: { all { } }\n"
        + _tensors("input", inputs)
        + _tensors("output", outputs)
        + f"dynamic_batching {{ max_queue_delay_microseconds: {int(max_queue_delay_us)} }}\n"
        + f"instance_group [ {{ count: {int(instances)} kind: {kind} }} ]\n"
        + params
    )


# The Python-backend model: one onnxruntime session per instance, a dynamic batch in one call.
PYTHON_MODEL = '''"""Written by mlsd.model_repository: this version's model.onnx, by onnxruntime."""
import json
import os

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        cfg = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in cfg.get("parameters", {}).items()}
        here = os.path.join(args["model_repository"], args["model_version"], "model.onnx")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(params.get("intra_op_threads", "1"))
        opts.inter_op_num_threads = 1
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(here, opts, providers=["CPUExecutionProvider"])
        self.inputs = [i["name"] for i in cfg["input"]]
        self.outputs = [o["name"] for o in cfg["output"]]

    def execute(self, requests):
        feeds = [
            {n: pb_utils.get_input_tensor_by_name(r, n).as_numpy() for n in self.inputs}
            for r in requests
        ]
        same = all(
            f[n].shape[1:] == feeds[0][n].shape[1:] for f in feeds for n in self.inputs
        )
        if same and len(feeds) > 1:  # the dynamic batch as one session call
            sizes = [len(f[self.inputs[0]]) for f in feeds]
            outs = self.session.run(
                self.outputs, {n: np.concatenate([f[n] for f in feeds]) for n in self.inputs}
            )
            bounds = np.cumsum([0] + sizes)
            per = [[o[a:b] for o in outs] for a, b in zip(bounds[:-1], bounds[1:])]
        else:
            per = [self.session.run(self.outputs, f) for f in feeds]
        return [
            pb_utils.InferenceResponse(
                output_tensors=[pb_utils.Tensor(n, np.ascontiguousarray(o))
                                for n, o in zip(self.outputs, outs)]
            )
            for outs in per
        ]
'''


def write_repository(
    repo: str | os.PathLike,
    name: str,
    versions: Mapping[int, str | os.PathLike],
    variant: str = "onnxruntime",
    max_batch_size: int = 64,
    max_queue_delay_us: int = 2000,
    instances: int = 1,
    kind: str = "KIND_GPU",
    parameters: Mapping[str, str] | None = None,
    intra_op_threads: int = 1,
) -> Path:
    """Write ``<repo>/<name>/`` from ONNX files, one Triton version each (same inputs and
    outputs in every version, e.g. fp32 and int8 of one model). Returns the model folder."""
    if not versions:
        raise ValueError("a Triton model needs at least one version (an ONNX file)")
    specs = {v: onnx_io(p) for v, p in versions.items()}
    first = next(iter(specs.values()))
    for v, s in specs.items():
        if [t.name for t in s[0]] != [t.name for t in first[0]]:
            raise ValueError(f"version {v} has other inputs than version {next(iter(specs))}")
    params = dict(parameters or {})
    scalar = [t.name for t in first[1] if not t.dims]
    if scalar:  # clients see them as (B, 1); mlsd's runner gives back (B,)
        params["scalar_outputs"] = ",".join(scalar)
    if variant == "python":
        params.setdefault("intra_op_threads", str(int(intra_op_threads)))
    folder = Path(repo) / name
    if folder.exists():
        shutil.rmtree(folder)
    for v, p in versions.items():
        d = folder / str(int(v))
        d.mkdir(parents=True)
        shutil.copyfile(p, d / "model.onnx")
        if variant == "python":
            (d / "model.py").write_text(PYTHON_MODEL)
    (folder / "config.pbtxt").write_text(
        model_config(
            name,
            first[0],
            first[1],
            variant,
            max_batch_size,
            max_queue_delay_us,
            instances,
            kind,
            params,
        )
    )
    return folder


def parse_config(text: str):
    """config.pbtxt -> Triton's ModelConfig protobuf (a misspelt field is an error)."""
    from tritonclient.grpc import model_config_pb2

    return text_format.Parse(text, model_config_pb2.ModelConfig())


def artifact_onnx_files(artifact) -> list[str]:
    """An artifact's ONNX files in repository-version order: the fp32 file, then its int8
    file where there is one (:data:`TRITON_VERSIONS`)."""
    files = sorted(f for f in artifact.manifest.get("files", {}) if f.endswith(".onnx"))
    int8 = [f for f in files if ".int8." in f]
    fp32 = [f for f in files if f not in int8]
    if len(fp32) != 1 or len(int8) > 1:
        raise ValueError(
            f"artifact {artifact.name}/{artifact.version} has ONNX files {files}: "
            "name the fp32 (and int8) file to export"
        )
    return fp32 + int8


def export_artifact(
    artifact,
    repo: str | os.PathLike,
    files: list[str] | None = None,
    name: str | None = None,
    **kw,
) -> Path:
    """Write ``<repo>/<name or artifact name>/`` from an artifact's ONNX files (versions 1, 2,
    ... in the order given), labelled with the artifact's name/version."""
    files = files or artifact_onnx_files(artifact)
    versions = {i + 1: artifact.file(f) for i, f in enumerate(files)}
    params = {"artifact": f"{artifact.name}/{artifact.version}"}
    params.update({f"file_{i + 1}": f for i, f in enumerate(files)})
    return write_repository(repo, name or artifact.name, versions, parameters=params, **kw)


def main(argv: list[str] | None = None) -> None:

    p = argparse.ArgumentParser(description="Write a Triton model repository from artifacts.")
    p.add_argument("--store", default="artifacts")
    p.add_argument(
        "--artifact",
        action="append",
        required=True,
        help="name[/version] (repeatable); version default: latest",
    )
    p.add_argument("--repository", required=True)
    p.add_argument(
        "--variant",
        choices=VARIANTS,
        default="python",
        help="python: this machine's Triton (Python backend + onnxruntime); "
        "onnxruntime: NVIDIA's container (native backend)",
    )
    p.add_argument("--kind", choices=("KIND_GPU", "KIND_CPU"), default="KIND_GPU")
    p.add_argument("--instances", type=int, default=1)
    p.add_argument("--max-batch-size", type=int, default=64)
    p.add_argument("--max-queue-delay-us", type=int, default=2000)
    p.add_argument("--intra-op-threads", type=int, default=1)
    a = p.parse_args(argv)
    store = ArtifactStore(a.store)
    for ref in a.artifact:
        n, _, v = ref.partition("/")
        art = store.load(n, v or "latest")
        folder = export_artifact(
            art,
            a.repository,
            variant=a.variant,
            kind=a.kind,
            instances=a.instances,
            max_batch_size=a.max_batch_size,
            max_queue_delay_us=a.max_queue_delay_us,
            intra_op_threads=a.intra_op_threads,
        )
        print(f"{art.name}/{art.version} -> {folder} ({a.variant})")


if __name__ == "__main__":
    main()
