"""The test suite. Serve's data plane is set here, before anything imports Ray, to what
``make serve`` runs (the Makefile's values; ``make test`` exports them too): the driver builds
the deployment handles and reads the gRPC setting when Ray Serve is first imported."""

from ops.kuberay.generate import apply_makefile_env

apply_makefile_env(
    (
        "RAY_SERVE_USE_GRPC_BY_DEFAULT",
        "RAY_SERVE_REPLICA_GRPC_MAX_MESSAGE_LENGTH",
        "RAY_SERVE_ENABLE_HA_PROXY",
        "RAY_SERVE_THROUGHPUT_OPTIMIZED",
        "RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP",
    )
)
