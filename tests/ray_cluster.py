"""A real two-node Ray cluster on this one machine, for the cluster tests.

- Node A (the head) and node B each run under their own ``ray start --block``, started here and
  stopped by the PIDs started here. Each node has its own loopback address (127.0.0.2, .3: Ray
  rewrites 127.0.0.1 to the machine's address) and explicit ports, so nothing collides with
  another Ray on the machine.
- Node B runs in its own mount namespace (``unshare --mount``) with its own folder bind-mounted
  over ``var``: its disk is not node A's, as on a cluster of machines. A file-backed store
  written on A is not there on B.
- GCS fault tolerance (optional): the head's GCS keeps its tables in a real Redis
  (``RAY_REDIS_ADDRESS``), so a head that dies and comes back finds the cluster again.
- Serve: the head's proxy on ``http_port``, node B's own proxy on ``worker_http_port`` (two
  proxies on one host need two ports); deployments pinned with the custom resources ``node_a``
  / ``node_b``. Apps are deployed with ``serve run --non-blocking CONFIG`` (a config, as users
  deploy) and observed over HTTP, so the test process itself never joins the cluster.

No psutil here: processes are found through /proc.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import ray
import yaml
from ray import serve
from ray._private.authentication.authentication_token_generator import (
    generate_new_authentication_token,
)

from tests.servers import free_port

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
HEAD_IP, WORKER_IP = "127.0.0.2", "127.0.0.3"


def children(pid: int) -> list[int]:
    """Every descendant of ``pid`` (/proc/<pid>/task/*/children)."""
    out, stack = [], [pid]
    while stack:
        p = stack.pop()
        try:
            for t in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{t}/children") as f:
                    kids = [int(c) for c in f.read().split()]
                out += kids
                stack += kids
        except (FileNotFoundError, ProcessLookupError):
            pass
    return out


def program(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return os.path.basename(f.read().split(b"\0", 1)[0].decode())
    except (FileNotFoundError, ProcessLookupError):
        return ""


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(") ", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def wait_for(check: Callable[[], object], timeout: float, what: str, every: float = 0.5):
    """Poll ``check`` until it returns something true; -> that value."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"not {what} after {timeout:.0f} s")
        time.sleep(every)


def _node_ports() -> list[str]:
    return [
        f"--node-manager-port={free_port()}",
        f"--object-manager-port={free_port()}",
        f"--dashboard-agent-listen-port={free_port()}",
        f"--dashboard-agent-grpc-port={free_port()}",
        f"--metrics-export-port={free_port()}",
        f"--runtime-env-agent-port={free_port()}",
    ]


class RayCluster:
    """Two Ray nodes on loopback; node B with its own ``var`` (see the module docstring)."""

    def __init__(
        self,
        var: Path,
        cpus: int = 4,
        redis: str | None = None,
        redis_password: str | None = None,
        env: dict[str, str] | None = None,
    ):
        self.dir = Path(tempfile.mkdtemp(prefix="mlsd-rc-"))  # short: unix socket paths
        self.var, self.var_b = Path(var), self.dir / "var_b"  # node B sees var_b at var
        self.var.mkdir(parents=True, exist_ok=True)
        self.var_b.mkdir()
        self.cpus, self.redis, self.redis_password = cpus, redis, redis_password
        self.port, self.http_port, self.worker_http_port = free_port(), free_port(), free_port()
        self.address = f"{HEAD_IP}:{self.port}"
        self.token = self.dir / "auth_token"
        self._make_token()
        self.env = {
            **os.environ,
            "RAY_TMPDIR": str(self.dir / "tmp"),
            "RAY_USAGE_STATS_ENABLED": "0",
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN_PATH": str(self.token),
            # 0 keeps Ray on 127.0.0.1 for one node but refuses `ray start --address`
            "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "1",
            "PYTHONPATH": str(ROOT),
            "PATH": f"{BIN}:{os.environ.get('PATH', '')}",
            # a node keeps serving while the GCS is away (GCS fault tolerance); KubeRay sets
            # this on workers too
            "RAY_gcs_rpc_server_reconnect_timeout_s": "120",
            **(env or {}),
        }
        self.env.pop("RAY_ADDRESS", None)
        self.head: subprocess.Popen | None = None
        self.worker: subprocess.Popen | None = None
        self._started: list[subprocess.Popen] = []

    def _make_token(self) -> None:

        fd = os.open(self.token, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(generate_new_authentication_token())

    def _log(self, name: str):
        return open(self.dir / f"{name}.log", "ab")

    def _node(self, name: str, argv: list[str], env: dict, what: str) -> subprocess.Popen:
        """Start a node's ``ray start --block`` (its own session, logged to ``<name>.log``),
        remembered for stop(); returns once its raylet runs."""
        node = subprocess.Popen(
            argv, env=env, stdout=self._log(name), stderr=subprocess.STDOUT, start_new_session=True
        )
        self._started.append(node)
        wait_for(lambda: self.pid_of(node, "raylet"), 90, f"{what}'s raylet started")
        return node

    # -- nodes -----------------------------------------------------------------------------
    def start_head(self) -> RayCluster:
        """Node A: the GCS (in Redis when configured), Serve's controller and head proxy."""
        marker = self.dir / "tmp" / "ray" / "ray_current_cluster"
        marker.unlink(missing_ok=True)  # a restarted head on the same port: not "running"
        env = dict(self.env)
        extra = []
        if self.redis:
            env["RAY_REDIS_ADDRESS"] = self.redis
            env["RAY_external_storage_namespace"] = "mlsd-test"
            if self.redis_password:
                extra.append(f"--redis-password={self.redis_password}")
        argv = [
            str(BIN / "ray"),
            "start",
            "--head",
            f"--port={self.port}",
            f"--num-cpus={self.cpus}",
            f"--node-ip-address={HEAD_IP}",
            '--resources={"node_a": 100}',
            "--include-dashboard=false",
            f"--dashboard-port={free_port()}",
            f"--ray-client-server-port={free_port()}",
            "--disable-usage-stats",
            *_node_ports(),
            *extra,
            "--block",
        ]
        self.head = self._node("head", argv, env, "the head")
        return self

    def start_worker(self) -> RayCluster:
        """Node B in its own mount namespace: ``var`` there is ``var_b``; its own proxy port."""
        inner = [
            str(BIN / "ray"),
            "start",
            f"--address={self.address}",
            f"--temp-dir={self.dir / 'tmp_b'}",
            f"--num-cpus={self.cpus}",
            f"--node-ip-address={WORKER_IP}",
            '--resources={"node_b": 100}',
            "--disable-usage-stats",
            *_node_ports(),
            "--block",
        ]
        script = (
            f"mount --bind {shlex.quote(str(self.var_b))} {shlex.quote(str(self.var))} && exec "
            + " ".join(map(shlex.quote, inner))
        )
        env = {**self.env, "RAY_SERVE_WORKER_PROXY_HTTP_PORT": str(self.worker_http_port)}
        argv = ["unshare", "--mount", "--propagation", "private", "--", "bash", "-c", script]
        self.worker = self._node("worker", argv, env, "node B")
        return self

    def pid_of(self, node: subprocess.Popen, name: str) -> int | None:
        """The PID of ``name`` (raylet, gcs_server) under a node's ``ray start``."""
        if node.poll() is not None:
            raise RuntimeError(f"ray start exited with {node.returncode}: {self.log_tail()}")
        pids = [p for p in children(node.pid) if program(p) == name]
        return pids[0] if pids else None

    def kill(self, node: subprocess.Popen, name: str) -> int:
        """SIGKILL one process of a node (``ray start --block`` then ends the node's others,
        as a crashed pod's would go); -> its PID."""
        pid = self.pid_of(node, name)
        assert pid is not None, f"no {name} on that node"
        os.kill(pid, signal.SIGKILL)
        node.wait(60)
        return pid

    # -- Serve ---------------------------------------------------------------------------------
    def serve_config(self, applications: list[dict]) -> dict:
        return {
            "proxy_location": "EveryNode",
            "http_options": {"host": "127.0.0.1", "port": self.http_port},
            "applications": applications,
        }

    def deploy(self, applications: list[dict], name: str = "apps") -> None:
        """``serve run --non-blocking`` a config of ``applications`` (returns once submitted)."""
        path = self.dir / f"{name}.yaml"
        path.write_text(yaml.safe_dump(self.serve_config(applications), sort_keys=False))
        out = subprocess.run(
            [str(BIN / "serve"), "run", "--non-blocking", "-a", self.address, str(path)],
            env=self.env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=180,
        )
        if out.returncode != 0:
            raise RuntimeError(f"serve run failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")

    def status(self) -> dict:
        """Serve's view, from a short-lived driver: {app: {status, message}}."""
        out = subprocess.run(
            [sys.executable, "-m", "tests.ray_cluster", "status", self.address],
            env=self.env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if out.returncode != 0:
            raise RuntimeError(f"status failed: {out.stderr[-2000:]}")
        return json.loads(out.stdout.strip().splitlines()[-1])

    def url(self, node: str, route: str) -> str:
        """``route`` through node ``a``'s (the head's) or node ``b``'s own proxy."""
        port = self.http_port if node == "a" else self.worker_http_port
        return f"http://127.0.0.1:{port}{route}"

    # -- teardown ----------------------------------------------------------------------------
    def log_tail(self, lines: int = 40) -> str:
        out = []
        for name in ("head", "worker"):
            p = self.dir / f"{name}.log"
            if p.exists():
                out += [f"--- {name}"] + p.read_text(errors="replace").splitlines()[-lines:]
        return "\n".join(out)

    def stop(self) -> list[int]:
        """SIGTERM each ``ray start`` we started (it stops its node), then SIGKILL whatever of
        theirs is left; -> PIDs that needed SIGKILL."""
        pids = []
        for proc in self._started:
            pids += [proc.pid, *children(proc.pid)]
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self._started:
            try:
                proc.wait(10)  # a node drains for up to 30 s: nothing here needs draining
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        left = [p for p in pids if alive(p)]
        for p in left:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if not os.environ.get("MLSD_KEEP_CLUSTER_LOGS"):  # else: the nodes' logs stay for a look
            shutil.rmtree(self.dir, ignore_errors=True)
        return left


def deployments(node: str, cpus: dict[str, float]) -> list[dict]:
    """Serve config ``deployments:`` pinning each named deployment to node ``a`` or ``b``."""
    return [
        {"name": d, "ray_actor_options": {"num_cpus": c, "resources": {f"node_{node}": 0.01}}}
        for d, c in cpus.items()
    ]


def _status(address: str) -> None:

    ray.init(address=address, logging_level="ERROR", log_to_driver=False)
    apps = serve.status().applications
    print(json.dumps({n: {"status": str(a.status), "message": a.message} for n, a in apps.items()}))


if __name__ == "__main__":
    if sys.argv[1] == "status":
        _status(sys.argv[2])
