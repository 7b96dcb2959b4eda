"""Start and stop a real Triton Inference Server on this machine (loopback only).

On a CPU-only machine the server is the Triton 2.51 binary that ``nvidia-pytriton`` ships
(Python backend only), installed in its own venv (``make triton-venv``: it pins numpy<2). A
cluster runs NVIDIA's container instead and points the apps at its URL; nothing here is needed
there. What this module handles (each bit was hit in practice):

- the backend directory Triton wants (``python/`` with the backend library, its utils and the
  stub for the venv's Python version), assembled from the wheel;
- the stub finds its interpreter through ``PATH`` and its libpython through
  ``LD_LIBRARY_PATH``: both point at the server's venv;
- ports other than 8000-8002 (Ray Serve's 8000), bound to 127.0.0.1; stopped by PID (SIGTERM).

``python -m mlsd.inference_server --repository R`` runs one in the foreground.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from mlsd.procs import free_port

DEFAULT_VENV = ".venv-triton"


class ServerError(RuntimeError):
    """The server could not be found, started, or did not become ready."""


def _venv_python(venv: Path) -> Path:
    py = venv / "bin" / "python"
    if not py.exists():
        raise ServerError(f"no Triton venv at {venv} (make triton-venv installs nvidia-pytriton)")
    return py


def _venv_facts(venv: Path) -> dict:
    """(site-packages, libpython dir, X.Y) of the server venv's interpreter."""
    code = (
        "import sys, sysconfig, site; print(site.getsitepackages()[0]);"
        "print(sysconfig.get_config_var('LIBDIR'));"
        "print(f'{sys.version_info[0]}.{sys.version_info[1]}')"
    )
    out = subprocess.run(
        [str(_venv_python(venv)), "-c", code], capture_output=True, text=True, check=True
    ).stdout.split("\n")
    return {"site": Path(out[0]), "libdir": out[1], "pyver": out[2]}


class TritonServer:
    """One server process over a model repository. A context manager; ``stop`` by PID."""

    def __init__(
        self,
        repository: str | os.PathLike,
        venv: str | os.PathLike = DEFAULT_VENV,
        http_port: int | None = None,
        grpc_port: int | None = None,
        metrics_port: int | None = None,
        log_path: str | os.PathLike | None = None,
        model_control: str = "none",
    ):
        self.repository = Path(repository).resolve()
        self.venv = Path(venv).resolve()
        self.http_port = http_port or free_port()
        self.grpc_port = grpc_port or free_port()
        self.metrics_port = metrics_port or free_port()
        self.log_path = Path(log_path) if log_path else None
        self.model_control = model_control
        self.proc: subprocess.Popen | None = None
        self._backends: str | None = None

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def _command(self) -> tuple[list[str], dict]:
        facts = _venv_facts(self.venv)
        root = facts["site"] / "pytriton" / "tritonserver"
        binary = root / "bin" / "tritonserver"
        stub = root / "python_backend_stubs" / facts["pyver"] / "triton_python_backend_stub"
        if not binary.exists() or not stub.exists():
            raise ServerError(
                f"{self.venv} has no Triton server binary or stub for Python "
                f"{facts['pyver']} (nvidia-pytriton installs both)"
            )
        self._backends = tempfile.mkdtemp(prefix="triton-backends-")
        py = Path(self._backends) / "python"
        py.mkdir()
        for f in (root / "backends" / "python").iterdir():
            if f.is_file():
                shutil.copy2(f, py / f.name)
        shutil.copy2(stub, py / stub.name)
        env = dict(os.environ)
        env["PATH"] = f"{self.venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        libs = [facts["libdir"], str(facts["site"] / "nvidia_pytriton.libs")]
        env["LD_LIBRARY_PATH"] = os.pathsep.join(libs + [env.get("LD_LIBRARY_PATH", "")])
        env.pop("PYTHONPATH", None)
        cmd = [
            str(binary),
            f"--model-repository={self.repository}",
            f"--backend-directory={self._backends}",
            f"--model-control-mode={self.model_control}",
            "--http-address=127.0.0.1",
            f"--http-port={self.http_port}",
            "--grpc-address=127.0.0.1",
            f"--grpc-port={self.grpc_port}",
            "--allow-metrics=true",
            "--allow-gpu-metrics=false",
            "--allow-cpu-metrics=true",
            "--metrics-address=127.0.0.1",
            f"--metrics-port={self.metrics_port}",
            "--exit-on-error=true",
            "--strict-readiness=true",
            "--disable-auto-complete-config",  # configs are complete (written from the ONNX)
            "--log-verbose=0",
        ]
        return cmd, env

    def start(self, timeout_s: float = 120.0, attempts: int = 3) -> TritonServer:
        """Start, then wait until the server says every model in the repository is ready.
        Ports picked free can be taken before the server binds them: an exit at start is
        retried on fresh ports (``attempts`` times), when the caller did not fix them."""
        for attempt in range(attempts):
            try:
                return self._start_once(timeout_s)
            except ServerError as e:
                if not e.args[0].startswith("tritonserver exited") or attempt == attempts - 1:
                    raise
                self.http_port, self.grpc_port, self.metrics_port = (
                    free_port(),
                    free_port(),
                    free_port(),
                )
        raise AssertionError("unreachable")

    def _start_once(self, timeout_s: float) -> TritonServer:
        cmd, env = self._command()
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        self.proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                code = self.proc.returncode
                self.stop()
                raise ServerError(
                    f"tritonserver exited with {code} at start"
                    + (f"; log: {self.log_path}" if self.log_path else "")
                )
            try:
                with urllib.request.urlopen(
                    f"http://{self.http_url}/v2/health/ready", timeout=2
                ) as r:
                    if r.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.25)
        self.stop()
        raise ServerError(f"tritonserver not ready after {timeout_s:.0f} s")

    def stop(self, timeout_s: float = 20.0) -> None:
        """SIGTERM to our PID (then SIGKILL if it lingers); removes the backend folder."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None
        if self._backends:
            shutil.rmtree(self._backends, ignore_errors=True)
            self._backends = None

    def __enter__(self) -> TritonServer:
        """``with TritonServer(...).start() as s`` must not start a second server (the first
        would outlive ``stop``, which only knows the last PID)."""
        if self.proc is not None and self.proc.poll() is None:
            return self
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repository", required=True, help="Triton model repository folder")
    p.add_argument("--venv", default=DEFAULT_VENV)
    p.add_argument("--http-port", type=int, default=8100)
    p.add_argument("--grpc-port", type=int, default=8101)
    p.add_argument("--metrics-port", type=int, default=8102)
    a = p.parse_args(argv)
    server = TritonServer(a.repository, a.venv, a.http_port, a.grpc_port, a.metrics_port)
    server.start()
    print(
        f"Triton ready: http {server.http_url}, grpc {server.grpc_url}, "
        f"metrics {server.metrics_url} (Ctrl-C or SIGTERM stops it)",
        flush=True,
    )
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        server.proc.wait()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        server.stop()


if __name__ == "__main__":
    main()
