"""The test suite. Serve's data plane is set here, before anything imports Ray, to what
``make serve`` runs (the Makefile's values; ``make test`` exports them too): the driver builds
the deployment handles and reads the gRPC setting when Ray Serve is first imported."""

import os
from pathlib import Path

from ops.kuberay.generate import makefile_env

GRPC_ENV = ("RAY_SERVE_USE_GRPC_BY_DEFAULT", "RAY_SERVE_REPLICA_GRPC_MAX_MESSAGE_LENGTH")
for _e in makefile_env((Path(__file__).resolve().parents[1] / "Makefile").read_text()):
    if _e["name"] in GRPC_ENV:
        os.environ.setdefault(_e["name"], _e["value"])
