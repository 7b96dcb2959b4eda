"""Benchmarks: each prints its figures side by side with its anchor, as ratios.

Serve runs in every benchmark as ``make serve`` runs it: the Makefile's Serve settings are
set here, when the package is first imported, so they are in place before Ray is (the driver
builds the deployment handles, and reads its gRPC setting at import). Set any of them in the
environment to override.
"""

import os
from pathlib import Path

from ops.kuberay.generate import makefile_env

for _e in makefile_env((Path(__file__).resolve().parents[1] / "Makefile").read_text()):
    os.environ.setdefault(_e["name"], _e["value"])
