"""The Triton backend against a real Triton Inference Server (started here, stopped by PID):
the same outputs as onnxruntime over HTTP and gRPC, sync and asyncio, fp32 and int8 versions;
clear errors when the server or model is not there; the exporter's configs parse as Triton's
own ModelConfig."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from mlsd.artifacts import ArtifactStore
from mlsd.model_repository import (
    TRITON_VERSIONS,
    artifact_onnx_files,
    export_artifact,
    onnx_io,
    parse_config,
    write_repository,
)
from mlsd.runtime import RunnerError, TritonRunner, arun, export_onnx, make_runner
from mlsd.visual_search.pipeline import ImageEncoderModel
from tests.conftest import start_triton


@pytest.fixture(scope="module")
def art(tiny_store):
    return ArtifactStore(tiny_store).load("visual_search")


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).random((10, 1, 28, 28), dtype=np.float32)


def _runner(server, protocol, version, art, **kw):
    url = server.grpc_url if protocol == "grpc" else server.http_url
    return make_runner(
        "triton",
        server={
            "url": url,
            "protocol": protocol,
            "model_name": art.name,
            "model_version": version,
            "expect": {"artifact": f"{art.name}/{art.version}"},
            **kw,
        },
    )


@pytest.mark.parametrize("protocol", ["grpc", "http"])
@pytest.mark.parametrize("backend", ["triton", "triton-int8"])
def test_same_outputs_as_onnxruntime(triton_server, art, images, protocol, backend):
    fname = artifact_onnx_files(art)[TRITON_VERSIONS[backend] - 1]
    ref = make_runner("onnx", path=art.file(fname), device="cpu").run(images)
    r = _runner(triton_server, protocol, str(TRITON_VERSIONS[backend]), art)
    assert r.backend == "triton" and r.inputs["image"][1] == "FP32"
    np.testing.assert_allclose(r.run(images), ref, atol=1e-5)

    async def concurrent():  # one request per image: the server's dynamic batcher meets them
        outs = await asyncio.gather(*(arun(r, images[i : i + 1]) for i in range(len(images))))
        await r.aclose()
        return np.concatenate(outs)

    np.testing.assert_allclose(asyncio.run(concurrent()), ref, atol=1e-5)


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_a_batch_over_max_batch_size_is_split(triton_server, art, protocol):
    big = np.random.default_rng(1).random((150, 1, 28, 28), dtype=np.float32)  # > 64
    ref = make_runner("onnx", path=art.file(artifact_onnx_files(art)[0]), device="cpu").run(big)
    r = _runner(triton_server, protocol, "1", art)
    assert 0 < r.max_batch_size < len(big)  # the config's, read by the runner
    np.testing.assert_allclose(r.run(big), ref, atol=1e-5)

    async def once():
        out = await r.arun(big)
        await r.aclose()
        return out

    np.testing.assert_allclose(asyncio.run(once()), ref, atol=1e-5)


def test_int8_version_differs_from_fp32(triton_server, art, images):
    fp32 = _runner(triton_server, "grpc", "1", art).run(images)
    int8 = _runner(triton_server, "grpc", "2", art).run(images)
    assert fp32.shape == int8.shape and not np.allclose(fp32, int8, atol=1e-6)


def test_encoder_model_through_triton(triton_server, art, images):
    """The visual-search encoder with backend triton: the embeddings of the onnx backend."""
    server = {"url": triton_server.grpc_url, "model_name": art.name, "model_version": "1"}
    via = ImageEncoderModel(art, backend="triton", server=server)
    local = ImageEncoderModel(art, backend="onnx")
    np.testing.assert_allclose(via.encode(images), local.encode(images), atol=1e-5)
    np.testing.assert_allclose(asyncio.run(via.aencode(images)), local.encode(images), atol=1e-5)


def test_errors_name_what_is_wrong(triton_server, art):
    with pytest.raises(RunnerError, match="'nope' is not ready"):
        TritonRunner(triton_server.grpc_url, "nope")
    with pytest.raises(RunnerError, match="version 9 is not ready"):
        TritonRunner(triton_server.http_url, art.name, "9", protocol="http")
    with pytest.raises(RunnerError, match="not the one pinned"):
        TritonRunner(triton_server.grpc_url, art.name, expect={"artifact": "visual_search/v0"})
    with pytest.raises(RunnerError, match="not reachable"):
        TritonRunner("127.0.0.1:1", art.name, protocol="http", timeout_s=2)
    with pytest.raises(ValueError, match="needs a server"):
        make_runner("triton")
    r = TritonRunner(triton_server.grpc_url, art.name, "1")
    with pytest.raises(RunnerError, match="failed"):
        r.run(np.zeros((1, 3, 5), np.float32))  # wrong shape: the server's 400, as an error


class _TwoInputs(torch.nn.Module):
    """Named inputs of two dtypes and a per-example scalar output (like a ranker)."""

    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Embedding(7, 3)
        self.lin = torch.nn.Linear(4, 1)

    def forward(self, x: dict) -> torch.Tensor:
        h = torch.cat([x["dense"], self.emb(x["item"]).sum((1, 2))[:, None]], 1)  # (B, 4)
        return self.lin(h).squeeze(1)  # (B,)


def _servers_on(repo) -> list[int]:
    """PIDs of tritonserver processes serving this repository (Linux /proc)."""

    found = []
    for d in Path("/proc").iterdir():
        try:
            cmd = (d / "cmdline").read_bytes().split(b"\0") if d.name.isdigit() else []
        except OSError:
            continue
        if (
            cmd
            and cmd[0].endswith(b"tritonserver")
            and f"--model-repository={repo}".encode() in cmd
        ):
            found.append(int(d.name))
    return found


def test_named_inputs_and_scalar_outputs(tmp_path):
    torch.manual_seed(0)
    model = _TwoInputs().eval()
    ex = {"dense": torch.zeros(2, 3), "item": torch.zeros(2, 5, dtype=torch.int64)}
    path = export_onnx(
        model, ex, tmp_path / "m.onnx", output_name="score", dynamic={"dense": [0], "item": [0, 1]}
    )
    ins, outs = onnx_io(path)
    assert [(t.name, t.data_type, t.dims) for t in ins] == [
        ("dense", "TYPE_FP32", (3,)),
        ("item", "TYPE_INT64", (-1,)),
    ]
    assert outs[0].dims == ()
    repo = tmp_path / "repo"
    write_repository(repo, "two", {1: path}, variant="python")
    rng = np.random.default_rng(1)
    x = {"dense": rng.random((6, 3), dtype=np.float32), "item": rng.integers(0, 7, (6, 4))}
    ref = make_runner("onnx", path=path).run(x)
    with start_triton(repo, tmp_path) as server:
        assert len(_servers_on(repo)) == 1  # started once, not twice
        r = TritonRunner(server.http_url, "two", protocol="http")
        np.testing.assert_allclose(r.run(x), ref, atol=1e-5)
        with pytest.raises(RunnerError, match="missing model inputs"):
            r.run({"dense": x["dense"]})
        pid = server.proc.pid

    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # stopped by PID
    assert _servers_on(repo) == []  # and nothing of it left running


@pytest.mark.parametrize("variant", ["onnxruntime", "python"])
def test_repository_configs_parse_as_triton_model_config(tmp_path, art, variant):
    folder = export_artifact(art, tmp_path, variant=variant, kind="KIND_GPU", instances=2)
    cfg = parse_config((folder / "config.pbtxt").read_text())
    assert cfg.name == art.name and cfg.max_batch_size == 64
    assert [i.name for i in cfg.input] == ["image"] and list(cfg.input[0].dims) == [1, 28, 28]
    assert cfg.dynamic_batching.max_queue_delay_microseconds == 2000
    assert cfg.version_policy.HasField("all")
    if variant == "onnxruntime":  # the cluster's native backend, on GPUs
        assert cfg.platform == "onnxruntime_onnx"
        assert cfg.instance_group[0].kind == cfg.instance_group[0].KIND_GPU
        assert not (folder / "1" / "model.py").exists()
    else:
        assert cfg.backend == "python" and (folder / "1" / "model.py").exists()
        assert cfg.instance_group[0].kind == cfg.instance_group[0].KIND_CPU
    assert cfg.instance_group[0].count == 2
    assert sorted(p.name for p in folder.iterdir() if p.is_dir()) == ["1", "2"]
    assert cfg.parameters["artifact"].string_value == f"{art.name}/{art.version}"
    assert cfg.parameters["file_2"].string_value == "encoder.int8.onnx"


def test_exporter_refuses_ambiguous_files(tmp_path, art):
    with pytest.raises(ValueError, match="at least one version"):
        write_repository(tmp_path, "x", {})
    with pytest.raises(ValueError, match="variant"):
        export_artifact(art, tmp_path, variant="tensorrt")
