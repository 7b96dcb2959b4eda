"""Benchmarks: each prints its figures side by side with its anchor, as ratios.

Serve runs in every benchmark as ``make serve`` runs it: the Makefile's Serve settings are
set here, when the package is first imported, so they are in place before Ray is (the driver
builds the deployment handles, and reads its gRPC setting at import). Set any of them in the
environment to override.
"""

from ops.kuberay.generate import apply_makefile_env

apply_makefile_env()
