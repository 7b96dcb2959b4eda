"""The serve tests' HTTP clients: ``api`` carries the test identity's bearer token (user
``tester``: search, write, admin); :func:`as_user` gives another identity's client."""

from __future__ import annotations

import os
import time

import requests
from ray.serve.context import _get_global_client
from ray.serve.schema import ServeDeploySchema

api = requests.Session()  # the ``keys`` fixture (tests/conftest.py) sets its token


def as_user(token: str | None) -> requests.Session:
    s = requests.Session()
    if token is not None:
        s.headers["Authorization"] = f"Bearer {token}"
    return s


def scrape(
    names: set[str], timeout: float = 90.0, labels: dict[str, list[str]] | None = None
) -> dict[str, list[str]]:
    """Poll Ray's Prometheus endpoint (the session's ``$MLSD_TEST_METRICS_PORT``) until every
    metric in ``names`` has a sample, and every label text in ``labels[name]`` is on one of that
    metric's lines; -> the sample lines of each. (Each replica exports on its own period, and
    other apps in the session export the same metric names, so a name alone can be early.)"""

    url = f"http://127.0.0.1:{os.environ['MLSD_TEST_METRICS_PORT']}/metrics"
    deadline = time.time() + timeout
    found: dict[str, list[str]] = {}
    while time.time() < deadline:
        try:
            text = requests.get(url, timeout=10).text
        except requests.RequestException:
            text = ""
        found = {n: [ln for ln in text.splitlines() if ln.startswith(n)] for n in names}
        if all(found.values()) and all(
            any(want in ln for ln in found.get(n, []))
            for n, ws in (labels or {}).items()
            for want in ws
        ):
            return found
        time.sleep(2)
    missing = sorted(n for n, v in found.items() if not v)
    missing += [
        f"{n}{{{w}}}"
        for n, ws in (labels or {}).items()
        for w in ws
        if not any(w in ln for ln in found.get(n, []))
    ]
    raise AssertionError(f"metrics never exported: {missing}")


def deploy_config(
    name: str,
    import_path: str,
    route_prefix: str,
    args: dict,
    deployments: list[dict] | None = None,
) -> None:
    """Apply a Serve config, as ``serve deploy serve_config.yaml`` does (no dashboard here):
    deploying it again with ``user_config`` overrides is an operator's run-time change."""

    app = {
        "name": name,
        "route_prefix": route_prefix,
        "import_path": import_path,
        "args": args,
        "deployments": deployments or [],
    }
    _get_global_client().deploy_apps(ServeDeploySchema(applications=[app]), _blocking=True)
    if os.environ.get("MLSD_TEST_SERVE_URL"):
        wait_for_route(os.environ["MLSD_TEST_SERVE_URL"], route_prefix)


def wait_for_route(base: str, prefix: str | None, timeout_s: float = 60.0) -> None:
    """Return once Serve's HTTP front at ``base`` lists ``prefix`` in ``/-/routes``: HAProxy
    (Serve's high-throughput mode) picks a new route up on its next reload, a moment after
    the app is running, and answers 404 before then."""
    deadline = time.time() + timeout_s
    while prefix is not None and time.time() < deadline:
        try:
            if prefix in api.get(f"{base}/-/routes", timeout=5).json():
                return
        except (OSError, ValueError):
            pass
        time.sleep(0.2)
