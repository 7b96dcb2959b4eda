"""A platform's own labelled posts: the documented CSV / JSONL format, heads taken from the
file's columns, the bad-input table, and the demo sets written out through it unchanged."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from mlsd.data.sources import DataError
from mlsd.harmful_content import data as D
from mlsd.harmful_content.data import read_posts, write_posts
from mlsd.harmful_content.features import IMAGE_DIM, image_vectors
from tests.conftest import real_photos

CSV = """post_id,text,lang,spam,threat
1,"buy now, cheap pills",en,1,0
2,"see you at the game
tonight",en,0,
3,nous allons vous trouver,fr,,1
"""


def test_heads_are_the_files_columns_and_empty_means_unknown(tmp_path):
    path = tmp_path / "posts.csv"
    path.write_text(CSV)
    posts, heads, bad = read_posts(str(path))
    assert heads == ("spam", "threat") and bad.count == 0 and bad.total == 3
    assert [p.labels for p in posts] == [{"spam": 1, "threat": 0}, {"spam": 0}, {"threat": 1}]
    assert posts[1].text == "see you at the game\ntonight"  # a quoted newline stays in the post
    assert [p.lang for p in posts] == ["en", "en", "fr"]
    assert {p.meta["split"] for p in posts} <= {"train", "val", "test"}
    only, heads, _ = read_posts(str(path), heads=["threat"])
    assert heads == ("threat",) and only[0].labels == {"threat": 0}


def test_jsonl_reads_the_same_as_csv(tmp_path):
    rows = [
        {"post_id": "a", "text": "hello", "toxic": 1, "split": "train"},
        {"post_id": "b", "text": "bye", "lang": "en", "toxic": 0, "split": "val"},
    ]
    path = tmp_path / "posts.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    posts, heads, _ = read_posts(str(path))
    assert heads == ("toxic",) and [p.meta["split"] for p in posts] == ["train", "val"]
    assert posts[0].lang == "und" and posts[1].labels == {"toxic": 0}


@pytest.mark.parametrize(
    "text, match",
    [
        ("", "empty file"),
        ("id,text,spam\n1,x,1\n", "no column 'post_id'"),
        ("post_id,body,spam\n1,x,1\n", "no column 'text'"),
        ("post_id,text,lang\n1,x,en\n", "no head column"),
        ("post_id,text,Spam Flag\n1,x,1\n", "lower-case letters"),
    ],
)
def test_a_posts_file_without_its_columns_is_refused(tmp_path, text, match):
    path = tmp_path / "posts.csv"
    path.write_text(text)
    with pytest.raises(DataError, match=match) as e:
        read_posts(str(path))
    assert str(path) in str(e.value)


def test_bad_rows_are_named_counted_and_a_mostly_bad_file_fails(tmp_path):
    good = "".join(f"{i},post {i},en,{i % 2}\n" for i in range(10))
    bad_rows = (
        "10,a post,en,yes\n"  # not 1 / 0 / empty
        "3,a second post 3,en,1\n"  # duplicate id
        "11,,en,1\n"  # empty text
        "12,x,en,1,extra\n"  # wrong field count
        f"13,{'w' * 20_001},en,1\n"  # over-long text
    )
    path = tmp_path / "posts.csv"
    path.write_text("post_id,text,lang,spam\n" + good + bad_rows)
    posts, _, bad = read_posts(str(path))
    assert len(posts) == 10 and bad.total == 15 and bad.count == 5
    text = " | ".join(bad.examples)
    assert f"{path}, row 12: label 'yes' is not 1, 0 or empty; column 'spam'" in text
    assert "row 13, column 'post_id': duplicate post_id '3'" in text
    assert "row 14, column 'text': empty text" in text
    assert "row 15: 5 fields, the header has 4" in text
    assert "row 16, column 'text': text over 20000 characters" in text
    path.write_text("post_id,text,spam\n" + "".join(f"{i},x,maybe\n" for i in range(5)))
    with pytest.raises(DataError, match="5 of 5 rows are bad"):
        read_posts(str(path))


def test_a_2gb_line_is_refused(tmp_path):
    path = tmp_path / "posts.csv"
    with open(path, "wb") as f:
        f.write(b"post_id,text,spam\n1,")
        f.truncate(2 * 1024**3)  # sparse: a 2 GiB second line
    with pytest.raises(DataError, match="line 2 is over"):
        read_posts(str(path))


def test_the_demo_sets_round_trip_through_the_format(tmp_path):
    try:
        train = D.davidson("train")[:300] + D.mlma("fr", "train")[:200]
    except D.DataNotFound:
        pytest.skip("harmful-content data not under ../shared/data")
    path = tmp_path / "demo.csv"
    write_posts(train, path, split="train")
    back, heads, bad = read_posts(str(path))
    assert heads == D.HEADS and bad.count == 0
    assert [(p.text, p.lang, p.labels) for p in back] == [(p.text, p.lang, p.labels) for p in train]
    assert {p.meta["split"] for p in back} == {"train"}


def test_a_posts_image_is_read_relative_to_the_file_and_embedded(tmp_path):

    (tmp_path / "img").mkdir()
    Image.fromarray(real_photos()[1]).save(tmp_path / "img" / "coffee.jpg")
    path = tmp_path / "posts.csv"
    path.write_text(
        "post_id,text,image,spam\n1,look,img/coffee.jpg,0\n2,gone,img/none.jpg,1\n3,plain,,0\n"
    )
    posts, _, _ = read_posts(str(path))
    assert posts[0].meta["image"] == f"{tmp_path}/img/coffee.jpg" and "image" not in posts[2].meta
    vecs, failed = image_vectors([p.meta.get("image") for p in posts])
    assert vecs[0].shape == (1, IMAGE_DIM) and vecs[1] is None and vecs[2] is None
    assert list(failed) == [1] and "none.jpg" in failed[1]
