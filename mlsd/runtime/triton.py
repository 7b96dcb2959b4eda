"""A model on a Triton Inference Server (KServe v2 over HTTP or gRPC) as a runner."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping

import numpy as np

from mlsd.runtime.base import Inputs, RunnerError, as_numpy

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
                n: np.ascontiguousarray(as_numpy(x[n]), dtype=t)
                for n, (t, _) in self.inputs.items()
            }
        else:
            t = self.inputs[self.input_name][0]
            arrays = {self.input_name: np.ascontiguousarray(as_numpy(x), dtype=t)}
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
