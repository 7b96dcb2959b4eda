"""What Ray Serve itself costs per request on this machine: the ceiling any app's HTTP rate
meets, whatever its model does.

Two apps that do no work, served as ``make serve`` serves ours (the Makefile's Serve settings;
``RAY_SERVE_USE_GRPC_BY_DEFAULT=0`` for Ray actor calls between deployments):
- an ingress that answers at once (proxy + one replica);
- the same ingress awaiting one call to another deployment (one hop).

    python -m bench.serve_overhead [--requests 3000 --concurrency 8]

Prints requests/s, latency, and the CPU each process spent per request.
"""

from __future__ import annotations

import argparse
import tempfile

from fastapi import FastAPI
from ray import serve

from bench import loadgen

empty_api, hop_api = FastAPI(), FastAPI()


@serve.deployment(ray_actor_options={"num_cpus": 0.1}, max_ongoing_requests=128)
@serve.ingress(empty_api)
class Answer:
    @empty_api.get("/x")
    async def x(self) -> dict:
        return {"ok": True}


@serve.deployment(ray_actor_options={"num_cpus": 0.1}, max_ongoing_requests=128)
class Leaf:
    async def echo(self, x: int) -> int:
        return x


@serve.deployment(ray_actor_options={"num_cpus": 0.1}, max_ongoing_requests=128)
@serve.ingress(hop_api)
class OneHop:
    def __init__(self, leaf):
        self.leaf = leaf

    @hop_api.get("/x")
    async def x(self) -> dict:
        return {"ok": await self.leaf.echo.remote(1)}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--requests", type=int, default=3000)
    p.add_argument("--concurrency", type=int, default=8)
    a = p.parse_args(argv)
    bench = loadgen.ServeBench(tempfile.mkdtemp(prefix="serve-overhead-"))
    url = bench.url("/overhead")
    try:
        apps = [
            ("an ingress that answers at once", Answer.bind()),
            ("the same, awaiting one hop", OneHop.bind(Leaf.bind())),
        ]
        for name, app in apps:
            serve.run(app, name="overhead", route_prefix="/overhead")
            bench.load(
                "overhead",
                lambda s, i: s.get(f"{url}/x", timeout=30),
                a.requests,
                a.concurrency,
                f"{name} (c={a.concurrency})",
            )
            serve.delete("overhead")
    finally:
        bench.close()
    bench.report(None, [])


if __name__ == "__main__":
    main()
