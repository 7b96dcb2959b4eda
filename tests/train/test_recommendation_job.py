"""WALS on Ray workers gives the in-process factors; the recommendation job (Ray WALS + Ray
Train ranker) reads the serving app's event log and writes an artifact the app can load."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mlsd.artifacts import ArtifactStore
from mlsd.data.movielens import GENRES, interaction_matrix, load_movielens
from mlsd.recommendation.artifact import load_recommender
from mlsd.recommendation.events import EventLog
from mlsd.recommendation.mf import WALS, WALSConfig
from tests.conftest import new_store
from train.recommendation import parse_args, run
from train.recommendation_wals import fit_wals_on_ray

pytestmark = [pytest.mark.slow]


def test_ray_workers_give_the_same_factors(ray_session):

    ml = load_movielens()
    fb = interaction_matrix(ml.ratings, ml.n_users, ml.n_items, "rating")
    cfg = WALSConfig(factors=16, iterations=3, reg=0.1, alpha=0.5)
    local = WALS(cfg).fit(fb)
    on_ray = fit_wals_on_ray(WALS(cfg), fb, workers=2, cpus_per_worker=1)
    np.testing.assert_allclose(local.user_factors, on_ray.user_factors, atol=1e-4)
    np.testing.assert_allclose(local.item_factors, on_ray.item_factors, atol=1e-4)


def test_job_reads_the_event_log_and_writes_a_loadable_artifact(ray_session, tmp_path):

    log = EventLog(new_store(tmp_path / "events.db"))
    for video in (1, 2, 3):
        log.append(1, video, "like", 893_300_000)
    log.append(5, 99_999, "watch", 893_300_000, unknown_video=True)  # kept, not trained on
    log.close()
    out = run(
        parse_args(
            [
                "--events",
                str(tmp_path / "events.db"),
                "--store",
                str(tmp_path / "store"),
                "--factors",
                "8",
                "--iterations",
                "2",
                "--epochs",
                "1",
                "--n-candidates",
                "20",
                "--wals-workers",
                "2",
                "--runs-dir",
                str(tmp_path / "runs"),
            ]
        )
    )
    assert out["logged_events"] == 4 and out["logged_used"] == 3 and out["unknown_video"] == 1
    art = ArtifactStore(tmp_path / "store").load("recommendation")
    assert art.manifest["data"]["ratings"] == 100_003
    rec = load_recommender(art)
    assert {1, 2, 3} <= set(rec.history.of(1)[0].tolist())
    c = rec.cg.generate(1, 10, rec.history.of(1)[0])
    assert c.strategy == "personal" and len(c.items) == 10


def test_job_trains_on_your_own_log_with_string_ids(ray_session, tmp_path):
    """README's "Your own data" for recommendation: an interaction log with string ids and
    events (MovieLens users and movies renamed, a skip and a broken row among them) and an
    items table with tags trains a loadable artifact that carries its id maps and tag names."""

    ml = load_movielens()
    r = ml.ratings[ml.ratings.user_id <= 150]
    lines = ["user_id,item_id,timestamp,event,value"]
    lines += [f"u{u},m{i},{t},rate,{v}" for u, i, v, t in r.itertuples(index=False)]
    lines += ["u1,m1,893300000,skip,", "u2,m2,not-a-time,watch,"]
    (tmp_path / "log.csv").write_text("\n".join(lines) + "\n")
    items = ["item_id,title,tags"]
    hot = ml.items[GENRES].to_numpy()
    for item, title, row in zip(ml.items.item_id, ml.items.title, hot, strict=True):
        tags = "|".join(g for g, on in zip(GENRES, row, strict=True) if on)
        items.append(f'm{item},"{title.replace(chr(34), chr(39))}",{tags}')
    (tmp_path / "items.csv").write_text("\n".join(items) + "\n")
    out = run(
        parse_args(
            [
                "--interactions",
                str(tmp_path / "log.csv"),
                "--items",
                str(tmp_path / "items.csv"),
                "--events",
                "none",
                "--store",
                str(tmp_path / "store"),
                "--factors",
                "8",
                "--iterations",
                "2",
                "--epochs",
                "1",
                "--n-candidates",
                "20",
                "--runs-dir",
                str(tmp_path / "runs"),
            ]
        )
    )
    art = ArtifactStore(tmp_path / "store").load("recommendation")
    data = art.manifest["data"]
    assert data["ratings"] == len(r) and data["input"]["bad_rows"] == 1
    assert data["input"]["left_out"] == {"skip events (not watch-like: no interaction)": 1}
    maps = json.loads(art.file("id_maps.json").read_text())
    assert maps["user_id"]["type"] == "str"
    maps = {k: m["ids"] for k, m in maps.items()}
    assert maps["user_id"]["u1"] >= 1 and len(maps["user_id"]) == r.user_id.nunique()
    rec = load_recommender(art)
    u1 = maps["user_id"]["u1"]
    assert len(rec.history.of(u1)[0]) == (r.user_id == 1).sum()
    assert rec.tables.genre_names == list(GENRES)  # MovieLens's genres keep their columns
    assert out["artifact"].startswith("recommendation/")
