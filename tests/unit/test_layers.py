"""The one direction of imports: apps -> deployments -> mlsd, train -> mlsd; mlsd is pure."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _imports(pkg: str):
    for path in (ROOT / pkg).rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for a in node.names:
                    yield path, a.name
            elif isinstance(node, ast.ImportFrom) and node.module:
                yield path, node.module


def test_mlsd_is_pure():
    bad = [
        (str(p), m)
        for p, m in _imports("mlsd")
        if m.startswith(("ray.serve", "ray.train", "apps", "deployments", "train", "bench"))
        or m == "ray"
    ]
    assert not bad, bad


def test_deployments_do_not_import_apps_or_train():
    bad = [(str(p), m) for p, m in _imports("deployments") if m.startswith(("apps", "train"))]
    assert not bad, bad


def test_train_does_not_import_serving():
    bad = [
        (str(p), m)
        for p, m in _imports("train")
        if m.startswith(("apps", "deployments", "ray.serve"))
    ]
    assert not bad, bad
