"""The real-clip evaluation set (bench/video_queries.json) and where its clips come from."""

from __future__ import annotations

import json
from pathlib import Path

from bench.video_clips import CLIPS
from mlsd.video import registry_clips

QUERIES = Path(__file__).parents[3] / "bench" / "video_queries.json"


def test_every_query_names_known_clips_and_both_splits_cover_the_new_clips():
    spec = json.loads(QUERIES.read_text())
    clips = spec["clips"]
    for q in spec["queries"]:
        assert q["split"] in ("dev", "test") and q["q"].strip()
        assert q["relevant"] and set(q["relevant"]) <= set(clips), q
    registry = {n for n, c in clips.items() if c["source"].startswith("registry:")}
    assert {clips[n]["source"].split(":", 1)[1] for n in registry} == set(CLIPS)  # all fetched
    for n in registry:  # each new clip: chosen on (dev) and held out (test)
        splits = {q["split"] for q in spec["queries"] if n in q["relevant"]}
        assert splits == {"dev", "test"}, n
    assert len({q["q"] for q in spec["queries"]}) == len(spec["queries"])  # no query twice


def test_registry_clips_are_found_where_the_fetcher_puts_them(tmp_path, monkeypatch):
    (tmp_path / "dive.mp4").write_bytes(b"\x00")
    (tmp_path / ".part-x.mp4").write_bytes(b"\x00")  # an interrupted fetch is not a clip
    monkeypatch.setenv("MLSD_VIDEO_CLIPS", str(tmp_path))
    assert list(registry_clips()) == ["dive.mp4"]
    assert registry_clips(tmp_path / "none") == {}
