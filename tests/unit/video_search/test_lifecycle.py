"""Editing and deleting videos: rows of the live log's ``video_changes`` table, applied by every
replica's branches before their next answer, after a restart, and folded by the catalogue job
(by URI: a catalogue video's id is its position in one build)."""

from __future__ import annotations

import os

import numpy as np
import pytest
from sqlalchemy import select

from mlsd.artifacts import ArtifactStore
from mlsd.state import LIVE_ID_BASE, StoreMissing
from mlsd.state.schema import video_uploads
from mlsd.video_search.catalogue import VideoCatalogue, VideoDoc, VideoLog, write_catalogue
from mlsd.video_search.pipeline import TextBranch

META = {
    "a.mp4": {"title": "Kingfisher diving"},
    "b.mp4": {"title": "Heron fishing"},
    "c.mp4": {"title": "Owl at night"},
}


def videos(names=("a.mp4", "b.mp4", "c.mp4")) -> list[dict]:
    rng = np.random.default_rng(0)
    return [
        {"path": f"/clips/{n}", "feat": rng.random(1280), "prob": rng.random(1000)} for n in names
    ]


def build(store: ArtifactStore, live=None, names=("a.mp4", "b.mp4", "c.mp4")) -> str:
    return write_catalogue(store, "video_catalogue", videos(names), META, {"fps": 1.0}, live)


def text_ids(branch: TextBranch, q: str) -> list[int]:
    return branch.search(q, 10)[0].tolist()


def test_log_changes_are_durable_and_a_delete_erases_the_upload(state_url, objects):
    log = VideoLog(state_url, objects)
    vid = log.append(VideoDoc(0, title="mine", owner="alice"), np.ones(4), np.ones(3), b"jpeg")
    assert log.thumbnail(vid) == b"jpeg"
    log.edit(vid, {"title": "renamed"}, "", "alice")
    assert log.delete(vid, "", "alice") is True
    assert log.delete(vid, "", "alice") is False  # twice
    assert log.since(0) == [] and log.thumbnail(vid) is None
    with log.db.read() as c:
        (doc, key) = c.execute(select(video_uploads.c.doc, video_uploads.c.thumb_key)).one()
    assert doc == "{}" and key is None  # its text is erased too
    assert [f for _, _, fs in os.walk(objects) for f in fs] == []  # and the thumbnail's bytes
    kinds = [(v, k, f) for _, v, k, f, _ in VideoLog(state_url).changes_since(0)]
    assert kinds == [(vid, "edit", {"title": "renamed"}), (vid, "delete", {})]


def test_edits_and_deletes_reach_every_replica_and_survive_a_restart(tmp_path, state_url):
    store, live = ArtifactStore(tmp_path / "store"), state_url
    build(store)
    art = store.load("video_catalogue")
    r1, r2 = TextBranch(VideoCatalogue(art, live)), TextBranch(VideoCatalogue(art, live))
    log = VideoLog(live)
    vid = log.append(
        VideoDoc(0, title="Zebrafish tank", owner="alice"), np.ones(1280), np.ones(1000)
    )
    assert text_ids(r2, "zebrafish") == [vid]
    log.edit(vid, {"title": "Guppy tank", "tags": "aquarium"}, "", "alice")
    assert text_ids(r1, "zebrafish") == [] and text_ids(r1, "guppy") == [vid]
    assert r2.catalogue.docs[vid].title == "Guppy tank" or text_ids(r2, "guppy") == [vid]
    log.edit(2, {"title": "Stork fishing"}, "/clips/b.mp4", "admin")  # a catalogue video
    log.delete(3, "/clips/c.mp4", "admin")
    assert (
        text_ids(r2, "stork") == [2] and text_ids(r2, "heron") == [] and text_ids(r2, "owl") == []
    )
    log.delete(vid, "", "alice")
    assert text_ids(r1, "guppy") == [] and vid not in r1.catalogue.docs
    restarted = TextBranch(VideoCatalogue(art, live))
    assert text_ids(restarted, "stork") == [2] and text_ids(restarted, "owl") == []
    assert text_ids(restarted, "guppy") == [] and set(restarted.catalogue.docs) == {1, 2}


def test_the_catalogue_job_folds_changes_by_uri(tmp_path, state_url):
    store, live = ArtifactStore(tmp_path / "store"), state_url
    build(store)
    log = VideoLog(live)
    log.delete(1, "/clips/a.mp4", "admin")
    log.edit(3, {"title": "Barn owl at night"}, "/clips/c.mp4", "admin")
    up = log.append(VideoDoc(0, title="Upload"), np.ones(1280), np.ones(1000))
    version = build(store, str(live))  # a.mp4 is left out: b.mp4 is now id 1, c.mp4 id 2
    art = store.load("video_catalogue", version)
    assert art.config["folded_changes"] == 2 and art.manifest["data"]["deleted_left_out"] == 1
    cat = VideoCatalogue(art, live)
    cat.refresh()
    assert {d.title for d in cat.docs.values()} == {"Heron fishing", "Barn owl at night", "Upload"}
    assert up in cat.docs and up > LIVE_ID_BASE  # uploads keep their ids, in the log
    log.delete(1, "/clips/b.mp4", "admin")  # after the build: applies to the new id 1
    assert cat.refresh().deleted == [1] and set(cat.docs) == {2, up}


def test_a_catalogue_job_whose_log_cannot_be_read_fails_naming_it(tmp_path):
    missing = tmp_path / "v.sqlite"
    with pytest.raises(StoreMissing, match=str(missing)):
        build(ArtifactStore(tmp_path / "store"), str(missing))
    assert not missing.exists()
