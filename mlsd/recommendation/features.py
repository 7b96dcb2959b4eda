"""The ranking model's features, as the book lists them, built the same way for training and
serving: video features (ID, genres, year, age at request time, title embedding, popularity),
user demographics, context (hour of day, day of week of the request), user history (the
watched and liked videos, pooled by the model), and the candidate generator's score.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from mlsd.data.movielens import GENRES, MovieLens

AGE_EDGES = np.array([18, 25, 35, 45, 50, 56])  # MovieLens' own age groups -> 7 buckets
N_AGE = len(AGE_EDGES) + 1
N_GENDER = 3  # F, M, unknown
N_ZIP = 11  # first zip digit 0-9, other
N_DOW = 7
N_DENSE = len(GENRES) + 13
SCORE_Z = len(GENRES) + 5  # column of the candidate score standardised within the request
SECONDS_PER_YEAR = 365.25 * 86400


def zip_region(z: str) -> int:
    z = str(z).strip()
    return int(z[0]) if z[:1].isdigit() else 10


class History:
    """Each user's interactions (item, rating, timestamp), CSR-style, sorted by time."""

    def __init__(self, indptr: np.ndarray, items: np.ndarray, ratings: np.ndarray, ts: np.ndarray):
        self.indptr, self.items, self.ratings, self.ts = indptr, items, ratings, ts

    @classmethod
    def from_ratings(cls, ratings: pd.DataFrame, n_users: int) -> History:
        r = ratings.sort_values(["user_id", "timestamp", "item_id"], kind="stable")
        counts = np.bincount(r.user_id.to_numpy(), minlength=n_users)[:n_users]
        indptr = np.r_[0, np.cumsum(counts)].astype(np.int64)
        return cls(
            indptr,
            r.item_id.to_numpy(np.int64),
            r.rating.to_numpy(np.float32),
            r.timestamp.to_numpy(np.int64),
        )

    @property
    def n_users(self) -> int:
        return len(self.indptr) - 1

    def of(self, user: int) -> tuple[np.ndarray, np.ndarray]:
        """(items, ratings) of a user; empty for users beyond the table."""
        if not 0 <= user < self.n_users:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        a, b = self.indptr[user], self.indptr[user + 1]
        return self.items[a:b], self.ratings[a:b]


@dataclass
class RecTables:
    """Item and user side tables, indexed by the source ids (row 0 unused in MovieLens)."""

    titles: list[str]
    genres: np.ndarray  # (I, 19) float32
    year: np.ndarray  # (I,) float32, 0 = unknown
    release_ts: np.ndarray  # (I,) int64, 0 = unknown
    title_emb: np.ndarray  # (I, E) float32 unit vectors
    popularity: np.ndarray  # (I,) float32 interaction counts in the training log
    age_bucket: np.ndarray  # (U,) int64
    gender: np.ndarray  # (U,) int64
    occupation: np.ndarray  # (U,) int64
    zip: np.ndarray  # (U,) int64
    occupations: list[str]
    item_ts_indptr: np.ndarray  # (I+1,) the log's timestamps per item, sorted (CSR)
    item_ts: np.ndarray  # (nnz,)
    relevant_min: int = 4
    genre_names: list[str] = field(default_factory=lambda: list(GENRES))  # the tag columns

    def recent_popularity(self, items: np.ndarray, now: int) -> np.ndarray:
        """(n, 2) interactions with each item in the 7 and 30 days before ``now``."""
        out = np.zeros((len(items), 2), np.float32)
        for j, i in enumerate(items):
            ts = self.item_ts[self.item_ts_indptr[i] : self.item_ts_indptr[i + 1]]
            end = np.searchsorted(ts, now, "right")
            out[j, 0] = end - np.searchsorted(ts, now - 7 * 86400, "left")
            out[j, 1] = end - np.searchsorted(ts, now - 30 * 86400, "left")
        return out

    @property
    def n_items(self) -> int:
        return len(self.titles)

    @property
    def n_users(self) -> int:
        return len(self.age_bucket)

    def is_known_video(self, video_id: int) -> bool:
        """A video of the catalogue tables (an id beyond them, or a gap, is unknown)."""
        return 0 <= video_id < self.n_items and self.titles[video_id] != ""

    def is_known_user(self, user_id: int) -> bool:
        """A user with demographics in the tables."""
        return 0 <= user_id < self.n_users and bool(self.age_bucket[user_id] > 0)

    @classmethod
    def build(
        cls,
        ml: MovieLens,
        train: pd.DataFrame,
        title_emb: np.ndarray,
        relevant_min: int = 4,
        genre_names: list[str] | None = None,
    ) -> RecTables:
        n_items, n_users = ml.n_items, ml.n_users
        items = ml.items.set_index("item_id").reindex(range(n_items))
        titles = items.title.fillna("").astype(str).tolist()
        occupations = sorted(ml.users.occupation.unique().tolist())
        users = ml.users.set_index("user_id").reindex(range(n_users))
        occ_idx = {o: i for i, o in enumerate(occupations)}
        by_item = train.sort_values(["item_id", "timestamp"], kind="stable")
        counts = np.bincount(by_item.item_id, minlength=n_items)[:n_items]
        return cls(
            titles=titles,
            genres=items[GENRES].fillna(0).to_numpy(np.float32),
            year=items.year.fillna(0).to_numpy(np.float32),
            release_ts=items.release_ts.fillna(0).to_numpy(np.int64),
            title_emb=np.asarray(title_emb, np.float32),
            popularity=np.bincount(train.item_id, minlength=n_items).astype(np.float32),
            age_bucket=np.searchsorted(AGE_EDGES, users.age.fillna(0).to_numpy(), "right"),
            gender=users.gender.map({"F": 0, "M": 1}).fillna(2).to_numpy(np.int64),
            occupation=users.occupation.map(occ_idx).fillna(len(occupations)).to_numpy(np.int64),
            zip=np.array([zip_region(z) if isinstance(z, str) else 10 for z in users.zip_code]),
            occupations=occupations,
            item_ts_indptr=np.r_[0, np.cumsum(counts)].astype(np.int64),
            item_ts=by_item.timestamp.to_numpy(np.int64),
            relevant_min=relevant_min,
            genre_names=list(genre_names or ml.genre_names),
        )

    def save(self, folder: str | Path) -> None:
        folder = Path(folder)
        arrays = {k: getattr(self, k) for k in self._array_fields()}
        np.savez(folder / "tables.npz", **arrays)
        meta = {
            "titles": self.titles,
            "occupations": self.occupations,
            "genre_names": self.genre_names,
        }
        (folder / "tables.json").write_text(json.dumps({**meta, "relevant_min": self.relevant_min}))

    @classmethod
    def load(cls, npz: str | Path, meta_json: str | Path) -> RecTables:
        with np.load(npz) as z:
            arrays = {k: z[k] for k in cls._array_fields()}
        meta = json.loads(Path(meta_json).read_text())
        return cls(**arrays, **meta)

    @staticmethod
    def _array_fields() -> list[str]:
        return [
            "genres",
            "year",
            "release_ts",
            "title_emb",
            "popularity",
            "age_bucket",
            "gender",
            "occupation",
            "zip",
            "item_ts_indptr",
            "item_ts",
        ]

    def user_cats(self, user: int) -> tuple[int, int, int, int]:
        """(age bucket, gender, occupation, zip region); unknown users get the 'unknown' rows."""
        if 0 <= user < self.n_users:
            return (
                int(self.age_bucket[user]),
                int(self.gender[user]),
                int(self.occupation[user]),
                int(self.zip[user]),
            )
        return 0, 2, len(self.occupations), 10


@dataclass
class RankRequest:
    """One user's ranking request: the candidates and everything known about the user."""

    user_id: int
    items: np.ndarray  # (n,) candidate item ids
    scores: np.ndarray  # (n,) candidate generator scores
    history_items: np.ndarray  # (h,) watched items
    history_ratings: np.ndarray  # (h,) their ratings (0 = implicit event, no rating)
    request_ts: int  # Unix seconds


def example_requests(tables: RecTables) -> list[RankRequest]:
    """Two small requests (one with a history, one without): for warm-up and ONNX export."""
    items = np.arange(1, min(tables.n_items, 9), dtype=np.int64)
    scores = np.linspace(1.0, 0.0, len(items), dtype=np.float32)
    hist = np.arange(1, min(tables.n_items, 5), dtype=np.int64)
    ts = 888_000_000
    return [
        RankRequest(1, items, scores, hist, np.full(len(hist), 5.0, np.float32), ts),
        RankRequest(2, items[:3], scores[:3], np.zeros(0, np.int64), np.zeros(0, np.float32), ts),
    ]


def _unit(v: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(v)
    return v / n if n > 0 else v


def build_batch(tables: RecTables, requests: list[RankRequest]) -> dict[str, torch.Tensor]:
    """Requests -> the model's input tensors; P = total candidates over the batch."""
    B = len(requests)
    cats = np.array([tables.user_cats(r.user_id) for r in requests], dtype=np.int64).reshape(B, 4)
    ts = np.array([r.request_ts for r in requests], dtype=np.int64)
    hour = (ts // 3600) % 24
    dow = (ts // 86400 + 3) % 7  # 1970-01-01 was a Thursday; 0 = Monday
    pair_user, dense, items = [], [], []
    hist, hist_off, liked, liked_off = [], [], [], []
    for b, r in enumerate(requests):
        it = np.asarray(r.items, np.int64)
        n = len(it)
        h_items = np.asarray(r.history_items, np.int64)
        h_items = h_items[(h_items >= 0) & (h_items < tables.n_items)]
        h_rat = np.asarray(r.history_ratings, np.float32)[: len(h_items)]
        like = h_items[h_rat >= tables.relevant_min]
        hist_off.append(sum(len(x) for x in hist))
        hist.append(h_items)
        liked_off.append(sum(len(x) for x in liked))
        liked.append(like)
        g = tables.genres[it]  # (n, 19)
        profile = tables.genres[h_items].mean(0) if len(h_items) else np.zeros(len(GENRES))
        t_all = _unit(tables.title_emb[h_items].mean(0)) if len(h_items) else None
        t_like = _unit(tables.title_emb[like].mean(0)) if len(like) else None
        temb = tables.title_emb[it]  # (n, E)
        year = tables.year[it]
        rel = tables.release_ts[it]
        age_years = np.where(rel > 0, (r.request_ts - rel) / SECONDS_PER_YEAR, 0.0)
        score = np.asarray(r.scores, np.float32)
        z = (score - score.mean()) / (score.std() + 1e-6) if n > 1 else np.zeros(n, np.float32)
        recent = tables.recent_popularity(it, r.request_ts)  # (n, 2)
        cols = [
            g,
            ((year - 1990) / 10 * (year > 0))[:, None],
            (year == 0)[:, None],
            np.clip(age_years, -2, 80)[:, None] / 10,
            np.log1p(tables.popularity[it])[:, None] / 5,
            score[:, None],
            z[:, None],
            (np.log1p(np.arange(n)) / 5)[:, None],
            np.log1p(recent) / 5,
            (g @ profile / np.maximum(g.sum(1), 1))[:, None],
            (temb @ t_all if t_all is not None else np.zeros(n))[:, None],
            (temb @ t_like if t_like is not None else np.zeros(n))[:, None],
            np.full((n, 1), np.log1p(len(h_items)) / 5),
        ]
        dense.append(np.concatenate(cols, axis=1).astype(np.float32))
        items.append(it)
        pair_user.append(np.full(n, b, np.int64))

    def cat(xs, dtype):
        return torch.as_tensor(np.concatenate(xs).astype(dtype) if xs else np.zeros(0, dtype))

    return {
        "item": cat(items, np.int64),  # (P,)
        "pair_user": cat(pair_user, np.int64),  # (P,)
        "dense": torch.as_tensor(np.concatenate(dense) if dense else np.zeros((0, N_DENSE))),
        "title": torch.as_tensor(tables.title_emb[np.concatenate(items)] if items else None),
        "user_cats": torch.as_tensor(cats),  # (B, 4)
        "hour": torch.as_tensor(hour),  # (B,)
        "dow": torch.as_tensor(dow),  # (B,)
        "hist": cat(hist, np.int64),  # (H,)
        "hist_offsets": torch.as_tensor(np.array(hist_off, np.int64)),  # (B,)
        "liked": cat(liked, np.int64),
        "liked_offsets": torch.as_tensor(np.array(liked_off, np.int64)),
    }
