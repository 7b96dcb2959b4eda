"""A user's (video, caption) pairs: the documented table and its bad-input table."""

from __future__ import annotations

import json

import pytest

from mlsd.data.sources import DataError
from mlsd.video_search.data import read_pairs


def test_pairs_resolve_relative_videos_and_count_bad_rows(tmp_path):
    path = tmp_path / "pairs.csv"
    path.write_text(
        "video,caption\n"
        "clips/a.mp4,  a dog   runs on the beach \n"
        "s3://bucket/b.mp4,a red car\n"
        "/abs/c.mp4,a red car\n"
        "clips/a.mp4,a dog runs on the beach\n"  # the same pair again (whitespace aside)
        f"clips/d.mp4,{'x' * 1001}\n"
        ",no video\n"
    )
    pairs, bad = read_pairs(str(path))
    assert pairs == [
        (f"{tmp_path}/clips/a.mp4", "a dog runs on the beach"),
        ("s3://bucket/b.mp4", "a red car"),
        ("/abs/c.mp4", "a red car"),
    ]
    assert bad.total == 6 and bad.count == 3
    text = " | ".join(bad.examples)
    assert f"{path}, row 5: duplicate row" in text
    assert "row 6, column 'caption': caption over 1000 characters" in text
    assert "row 7, column 'video': empty video" in text


def test_jsonl_pairs_and_refused_tables(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text(json.dumps({"video": "a.mp4", "caption": "waves"}) + "\n[1]\n")
    pairs, bad = read_pairs(str(path))
    assert pairs == [(f"{tmp_path}/a.mp4", "waves")] and bad.count == 1
    path = tmp_path / "pairs.csv"
    path.write_text("file,caption\na.mp4,waves\n")
    with pytest.raises(DataError, match="no column 'video'"):
        read_pairs(str(path))
    path.write_text("video,caption\n" + "a.mp4,\n" * 3)
    with pytest.raises(DataError, match="3 of 3 rows are bad"):
        read_pairs(str(path))
