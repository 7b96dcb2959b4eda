"""What an app's build does with its stores, without Ray: the stores every app declares, the
one command that creates them, and the build's refusals (node-local state on several nodes,
a missing store, a URL with a typo)."""

from __future__ import annotations

import os

import pytest
import yaml

from apps import common
from apps.recommendation import RecommendationArgs
from apps.state import app_stores
from apps.state import main as state_cli
from apps.visual_search import VisualSearchArgs
from mlsd.state import StoreMissing, StoreURLError, init_store


def _args(tmp_path, **kw) -> VisualSearchArgs:
    return VisualSearchArgs(
        artifact_store=str(tmp_path / "artifacts"),
        live_log=str(tmp_path / "live.sqlite"),
        object_store=str(tmp_path / "objects"),
        auth={"key_store": str(tmp_path / "keys.sqlite")},
        **kw,
    )


def test_every_app_declares_its_stores_and_one_command_creates_them(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    with open(os.path.join(root, "serve_config.yaml")) as f:
        config = yaml.safe_load(f)
    urls, objects, uploads = app_stores(config)
    assert {os.path.basename(u) for u in urls} == {
        "keys.sqlite",
        "live.sqlite",
        "events.db",
        "videos.sqlite",
        "reviews.sqlite",
    }
    assert {os.path.relpath(o) for o in objects} >= {
        "var/visual_search/objects",
        "var/video_search/objects",
        "var/blurring/images",
    }
    assert uploads[urls[1]].endswith("visual_search/objects")  # where an old log's bytes go
    cfg = tmp_path / "serve.yaml"
    cfg.write_text(yaml.safe_dump(config))
    assert state_cli(["check", str(cfg)]) == 1  # nothing there yet: said, not created
    assert not (tmp_path / "var").exists()
    assert state_cli(["init", str(cfg)]) == 0
    assert state_cli(["check", str(cfg)]) == 0
    assert (tmp_path / "var" / "recommendation" / "events.db").exists()


def test_node_local_state_is_refused_on_several_nodes(tmp_path, monkeypatch):
    a = _args(tmp_path)
    monkeypatch.setattr(common, "alive_ray_nodes", lambda: 2)
    with pytest.raises(ValueError, match="2 Ray nodes are alive") as e:
        a.open_state()  # refused before anything is opened: the stores need not exist
    assert "live_log" in str(e.value) and "object_store" in str(e.value)
    assert "auth.key_store" in str(e.value)
    for path in ("live.sqlite", "keys.sqlite"):
        init_store(tmp_path / path)
    os.makedirs(tmp_path / "objects")
    _args(tmp_path, allow_node_local_state=True).open_state()  # said so: allowed
    monkeypatch.setattr(common, "alive_ray_nodes", lambda: 1)
    a.open_state()  # one node: the embedded default


def test_a_build_fails_on_a_missing_store_or_a_typo(tmp_path):
    init_store(tmp_path / "keys.sqlite")
    with pytest.raises(StoreMissing, match="live.sqlite.*python -m mlsd.state init"):
        _args(tmp_path).open_state()
    assert not (tmp_path / "live.sqlite").exists()
    with pytest.raises(StoreURLError, match="looks like a URL"):
        RecommendationArgs(events_log="postgresql:/mlsd", auth="none").open_state()
