"""The one direction of imports: apps -> deployments -> mlsd, train -> mlsd; mlsd is pure."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


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


SYSTEMS = sorted(
    p.name for p in (ROOT / "mlsd").iterdir() if p.is_dir() and (p / "__init__.py").exists()
)
SHARED_PACKAGES = {"data", "runtime", "state"}  # readers, the model runners, the state layer


def _system_of(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] == "mlsd" and len(parts) > 1 and parts[1] in SYSTEMS:
        return None if parts[1] in SHARED_PACKAGES else parts[1]
    return None


def test_systems_do_not_import_each_other():
    """mlsd/<a>/ never imports mlsd/<b>/: each chapter stands alone on the shared modules."""
    assert {"visual_search", "video_search", "recommendation"} <= set(SYSTEMS)
    bad = []
    for system in set(SYSTEMS) - SHARED_PACKAGES:
        for path, module in _imports(f"mlsd/{system}"):
            other = _system_of(module)
            if other is not None and other != system:
                bad.append((str(path.relative_to(ROOT)), module))
    assert not bad, bad


def test_shared_modules_do_not_import_upward():
    """mlsd/*.py, mlsd/data/ and mlsd/state/ are what several systems use: they import no
    system."""
    bad = []
    shared = [(ROOT / "mlsd" / p).rglob("*.py") for p in SHARED_PACKAGES]
    for path in [*(ROOT / "mlsd").glob("*.py"), *(p for g in shared for p in g)]:
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module]
                if isinstance(node, ast.ImportFrom) and node.module
                else []
            )
            bad += [(path.name, m) for m in names if _system_of(m) is not None]
    assert not bad, bad


def test_one_live_id_base_and_no_flat_system_modules():
    """What the layout issue found twice or flat is defined once, in its package."""
    flat = {
        *("visual_search.py", "video_search.py", "catalogue.py", "rerank.py", "fusion.py"),
        *("video_catalogue.py", "video_rerank.py", "retrieval_eval.py", "contrastive.py"),
    }
    assert not flat & {p.name for p in (ROOT / "mlsd").glob("*.py")}
    assert not (ROOT / "mlsd" / "models").exists()
    defs = [
        str(p.relative_to(ROOT))
        for p in (ROOT / "mlsd").rglob("*.py")
        if "\nLIVE_ID_BASE =" in p.read_text()
    ]
    assert defs == ["mlsd/state/ids.py"], defs


def test_only_the_state_layer_opens_a_database():
    """Every log, queue and key store goes through mlsd.state (SQLAlchemy): nothing else
    opens SQLite or Postgres directly, so nothing else can diverge across nodes."""
    bad = []
    for pkg in ("mlsd", "apps", "deployments", "train", "bench"):
        for path, module in _imports(pkg):
            rel = path.relative_to(ROOT)
            if module in ("sqlite3", "psycopg") and rel.parts[:2] != ("mlsd", "state"):
                bad.append((str(rel), module))
    assert not bad, bad
