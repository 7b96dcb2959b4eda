"""A platform's own interaction log: the documented tables, their bad-input table, string ids
and tags, and MovieLens 100K written out and read back unchanged."""

from __future__ import annotations

import pandas as pd
import pytest

from mlsd.data.movielens import GENRES, MovieLensNotFound, load_movielens
from mlsd.data.sources import DataError
from mlsd.recommendation.data import read_interactions, write_movielens

INTERACTIONS = """user_id,item_id,timestamp,event,value
alice,v1,2024-01-01T10:00:00Z,watch,
alice,v2,1704103200,like,
bob,v1,1704103300,rate,2
bob,v3,1704103400,impression,
carol,v2,1704103500,complete,
"""
ITEMS = """item_id,title,tags,release_ts
v1,Herons at dawn,nature|birds,2020-05-01
v2,Street food,food|travel,
v3,City lights,travel,1600000000
"""


def test_string_ids_tags_and_events_become_the_training_log(tmp_path):
    (tmp_path / "i.csv").write_text(INTERACTIONS)
    (tmp_path / "items.csv").write_text(ITEMS)
    own = read_interactions(str(tmp_path / "i.csv"), str(tmp_path / "items.csv"))
    r = own.ml.ratings
    assert own.id_maps["user_id"] == {"alice": 1, "bob": 2, "carol": 3}
    assert own.id_maps["item_id"] == {"v1": 1, "v2": 2, "v3": 3}
    # an impression says nothing was watched: left out, and reported as such
    assert len(r) == 4 and own.bad.count == 0
    assert own.bad.left_out == {"impression events (not watch-like: no interaction)": 1}
    assert r.timestamp.iloc[0] == 1704103200  # the ISO time, in Unix seconds
    # the event's default strength (watch 3, like 5, complete 4); an explicit value wins (2)
    assert r.rating.tolist() == [3, 5, 2, 4]
    # the most frequent tags take the model's tag columns, the most frequent first
    assert own.tag_names[0] == "travel"
    assert set(own.tag_names[:4]) == {"travel", "nature", "birds", "food"}
    items = own.ml.items.set_index("item_id")
    col = GENRES[own.tag_names.index("travel")]
    assert items.loc[3, col] == 1 and items.loc[1, col] == 0
    assert items.loc[1, "year"] == 2020 and items.loc[2, "year"] == 0
    assert own.ml.genre_names == own.tag_names


def test_bad_interactions_are_named_and_counted(tmp_path):
    good = "".join(
        f"{u},{i},{1700000000 + u * 10 + i},watch,\n" for u in range(1, 4) for i in range(1, 6)
    )
    bad = (
        ",3,1700000000,watch,\n"  # row 17: empty user id
        "1,3,yesterday,watch,\n"  # row 18: not a time
        "1,3,1700000001,teleport,\n"  # row 19: unknown event
        "1,3,1700000002,rate,9\n"  # row 20: value outside 1..5
        "1,1,1700000011,watch,\n"  # row 21: the same row as row 2
        "1,99,1700000003,watch,\n"  # row 22: an item the items table lacks
    )
    (tmp_path / "i.csv").write_text("user_id,item_id,timestamp,event,value\n" + good + bad)
    items = "item_id,title\n" + "".join(f"{i},t{i}\n" for i in range(1, 6))
    (tmp_path / "items.csv").write_text(items)
    own = read_interactions(str(tmp_path / "i.csv"), str(tmp_path / "items.csv"))
    assert len(own.ml.ratings) == 15 and own.bad.total == 21 and own.bad.count == 6
    text = " | ".join(own.bad.examples)
    assert "row 17, column 'user_id': empty id" in text
    assert "row 18, column 'timestamp': timestamp is not Unix seconds" in text
    assert "row 19, column 'event': unknown event teleport" in text
    assert "row 20, column 'value': value not in 1..5" in text
    assert "row 21: duplicate row" in text
    assert "row 22, column 'item_id': unknown item_id" in text


@pytest.mark.parametrize(
    "text, match",
    [
        ("", "empty file"),
        ("user,item_id,timestamp\n1,2,3\n", "no column 'user_id'"),
        ("user_id,item_id,timestamp\n", "no rows"),
    ],
)
def test_a_log_without_its_columns_is_refused(tmp_path, text, match):
    path = tmp_path / "i.csv"
    path.write_text(text)
    with pytest.raises(DataError, match=match):
        read_interactions(str(path))


def test_a_mostly_bad_log_fails(tmp_path):
    path = tmp_path / "i.csv"
    path.write_text("user_id,item_id,timestamp\n" + "1,2,never\n" * 6 + "1,2,1700000000\n")
    with pytest.raises(DataError, match="6 of 7 rows are bad"):
        read_interactions(str(path))


def test_parquet_reads_like_csv(tmp_path):
    df = pd.DataFrame(
        {
            "user_id": [10, 10, 11],
            "item_id": [5, 6, 5],
            "timestamp": [1, 2, 3],
            "event": ["watch", "like", "rate"],
            "value": [None, None, 4.0],
        }
    )
    df.to_parquet(tmp_path / "i.parquet")
    own = read_interactions(str(tmp_path / "i.parquet"))
    assert own.id_maps == {}  # integer ids are kept
    assert own.ml.ratings.user_id.tolist() == [10, 10, 11]
    assert own.ml.ratings.rating.tolist() == [3, 5, 4]


def test_movielens_round_trips_through_the_format(tmp_path):
    try:
        ml = load_movielens()
    except MovieLensNotFound:
        pytest.skip("MovieLens 100K not installed")
    paths = write_movielens(ml, str(tmp_path / "ml"))
    own = read_interactions(paths["interactions"], paths["items"], paths["users"])
    assert own.bad.count == 0 and own.tag_names == list(GENRES)
    pd.testing.assert_frame_equal(own.ml.ratings, ml.ratings)
    key = ["item_id"]
    pd.testing.assert_frame_equal(
        own.ml.items.sort_values(key).reset_index(drop=True),
        ml.items.sort_values(key).reset_index(drop=True),
        check_dtype=False,
    )
    users = own.ml.users.sort_values("user_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(
        users.astype(str), ml.users.sort_values("user_id").reset_index(drop=True).astype(str)
    )
    assert (own.ml.n_users, own.ml.n_items) == (ml.n_users, ml.n_items)
