"""Recommendation on a platform's own interaction log: the documented input format.

Format (README, "Your own data"), CSV or Parquet, local or any fsspec URI:

- interactions (required): ``user_id``, ``item_id`` (integers or strings), ``timestamp``
  (Unix seconds, or an ISO-8601 date / time), ``event`` (watch, complete, like, share, rate,
  dislike, click, impression, skip; default watch) and optional ``value`` (a rating on 1..5;
  it wins over the event's default strength, :data:`EVENT_STRENGTH`: the serving log's rule);
- items (optional): ``item_id``, ``title``, ``tags`` (``|``-separated: genres, topics, ...),
  ``release_ts`` (Unix seconds or a date);
- users (optional): ``user_id``, ``age``, ``gender`` (F / M / other), ``occupation``,
  ``zip_code``.

The result is the same in-memory interaction log MovieLens 100K's own reader gives
(:class:`mlsd.data.movielens.MovieLens`), so training and evaluation do not know where it came
from. Dense integer ids are kept; string ids (and integers too sparse to index tables by) are
numbered 1..n and the map is returned and written to the artifact, so the API takes and gives
the platform's own ids (:mod:`mlsd.recommendation.ids`). The
model has a fixed width of :data:`GENRES` tag columns: tags that are MovieLens's genres keep
its columns; otherwise the most frequent tags take them (their names go to the artifact).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import fsspec
import numpy as np
import pandas as pd

from mlsd.data.movielens import GENRES, MovieLens, _finish_items
from mlsd.data.sources import BadRows, DataError
from mlsd.recommendation.events import EVENT_STRENGTH, WATCH_EVENTS
from mlsd.recommendation.ids import PlatformIds, id_maps_json


@dataclass
class OwnLog:
    """A platform's log read into the training format, and what the reader said of it."""

    ml: MovieLens
    tag_names: list[str]  # the names of the GENRES-wide tag columns, in order
    id_maps: dict[str, dict[str, int]] = field(default_factory=dict)  # platform id -> model's
    bad: BadRows = field(default_factory=BadRows)
    integer_ids: dict[str, bool] = field(default_factory=dict)  # per kind: integer ids?

    def platform_ids(self) -> PlatformIds:
        """The id maps as serving and the next training run's log reader use them."""
        return PlatformIds.from_maps(self.id_maps, self.integer_ids)

    def id_maps_json(self) -> bytes:
        """The artifact's ``id_maps.json`` (serving reads it: :mod:`mlsd.recommendation.ids`)."""
        return id_maps_json(self.id_maps, self.integer_ids)


def _read(path: str, what: str, required: tuple[str, ...]) -> pd.DataFrame:
    try:
        if path.lower().endswith((".parquet", ".pq")):
            df = pd.read_parquet(path)
        else:
            df = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[])
    except FileNotFoundError as e:
        raise DataError(f"{path}: no such file") from e
    except pd.errors.EmptyDataError as e:
        raise DataError(f"{path}: empty file") from e
    except Exception as e:  # a broken file of any kind: name it
        raise DataError(f"{path}: cannot read the {what} table: {type(e).__name__}: {e}") from e
    df.columns = [str(c).strip() for c in df.columns]
    for col in required:
        if col not in df.columns:
            raise DataError(f"{path}: no column {col!r} (the columns are {list(df.columns)})")
    if df.empty:
        raise DataError(f"{path}: no rows")
    return df


def _blank(values: pd.Series) -> pd.Series:
    """Empty cells: "" in a CSV, null in Parquet."""
    if pd.api.types.is_numeric_dtype(values):  # a typed column (Parquet): no strings to scan
        return values.isna()
    return values.isna() | values.astype(str).str.strip().eq("")


def _times(values: pd.Series) -> pd.Series:
    """Unix seconds or ISO dates -> int seconds; NaN where neither."""
    if pd.api.types.is_numeric_dtype(values):
        return values.astype(float)
    if pd.api.types.is_datetime64_any_dtype(values):
        return pd.Series(values.dt.as_unit("s").astype("int64"), index=values.index).astype(float)
    s = values.astype(str).str.strip()
    num = pd.to_numeric(s, errors="coerce")
    iso = pd.to_datetime(s.where(num.isna()), errors="coerce", utc=True, format="ISO8601")
    sec = iso.dt.as_unit("s").astype("int64", errors="ignore") if len(iso) else iso
    out = num.copy()
    has_iso = iso.notna()
    out[has_iso] = pd.Series(sec, index=s.index)[has_iso].astype(float)
    return out


def _ids(values: pd.Series) -> tuple[pd.Series, dict[str, int] | None, bool]:
    """-> (the model's ids, the map or None, were the platform's ids integers?). Integer ids
    are kept when they are dense enough to index the model's tables by (the largest under
    4 x their number + 1,000: a table 10^9 rows long for a few users would not fit in memory);
    anything else is numbered 1..n in sorted order (integers numerically)."""
    if pd.api.types.is_integer_dtype(values) and (values >= 0).all():
        num = values.astype(np.int64)
    else:
        s = values.astype(str).str.strip()
        num = pd.to_numeric(s, errors="coerce")
        if not (num.notna().all() and (num >= 0).all() and (num == num.round()).all()):
            names = sorted(set(s[s != ""]))
            mapping = {n: i + 1 for i, n in enumerate(names)}
            return s.map(mapping).fillna(-1).astype(np.int64), mapping, False
        num = num.astype(np.int64)
    distinct = np.unique(num.to_numpy())
    if len(distinct) == 0 or distinct[-1] < 4 * len(distinct) + 1000:
        return num, None, True
    mapping = {str(int(v)): i + 1 for i, v in enumerate(distinct)}
    return pd.Series(np.searchsorted(distinct, num.to_numpy()) + 1, index=num.index), mapping, True


def _map_ids(values: pd.Series, mapping: dict[str, int] | None, integer: bool) -> pd.Series:
    """A side table's ids (items, users) through the log's map; NaN where it has none."""
    s = values.astype(str).str.strip()
    if mapping is None:
        return pd.to_numeric(s, errors="coerce")
    if integer:  # "007" and 7 are the same id
        s = pd.to_numeric(s, errors="coerce").map(lambda v: str(int(v)) if v == v else "")
    return s.map(mapping)


def read_interactions(
    interactions: str,
    items: str | None = None,
    users: str | None = None,
    max_bad_fraction: float = 0.5,
) -> OwnLog:
    """The documented tables -> :class:`OwnLog`. A missing column, an empty file or a mostly
    bad log is a :class:`DataError`; a bad interaction (missing id, a timestamp that is not a
    time, an unknown event, a value outside 1..5, an item the items table lacks, the same row
    twice) is named (file, row, column) and counted."""
    df = _read(interactions, "interactions", ("user_id", "item_id", "timestamp"))
    n = len(df)
    rows = pd.Series(np.arange(n) + 2, index=df.index)  # the CSV's line numbers (header = 1)
    bad = BadRows(total=n)
    reason = pd.Series("", index=df.index, dtype=object)
    column = pd.Series("", index=df.index, dtype=object)

    def flag(mask: pd.Series, why, col: str) -> None:
        mask = mask & (reason == "")
        if isinstance(why, pd.Series):
            reason[mask] = why[mask]
        else:
            reason[mask] = why
        column[mask] = col

    for col in ("user_id", "item_id"):
        flag(_blank(df[col]), "empty id", col)
    ts = _times(df["timestamp"])
    flag(ts.isna(), "timestamp is not Unix seconds or an ISO date", "timestamp")
    event = df["event"].astype(str).str.strip().str.lower() if "event" in df else None
    if event is not None:
        event = event.where(~_blank(df["event"]), "watch")
        flag(~event.isin(list(EVENT_STRENGTH)), "unknown event " + event.str[:20], "event")
    else:
        event = pd.Series("watch", index=df.index)
    value = pd.Series(np.nan, index=df.index)
    if "value" in df:
        given = ~_blank(df["value"])
        value = pd.to_numeric(df["value"].where(given), errors="coerce")
        flag(given & (value.isna() | (value < 1) | (value > 5)), "value not in 1..5", "value")
    user, user_map, user_int = _ids(df["user_id"])
    item, item_map, item_int = _ids(df["item_id"])
    items_df = None
    if items is not None:
        items_df = _read(items, "items", ("item_id",))
        known = set(items_df["item_id"].astype(str).str.strip())
        flag(~df["item_id"].astype(str).str.strip().isin(known), "unknown item_id", "item_id")
    dup = pd.DataFrame({"u": user, "i": item, "t": ts, "e": event}).duplicated()
    flag(dup, "duplicate row", "")
    for i in np.flatnonzero((reason != "").to_numpy())[: bad.max_examples]:
        where = f"{interactions}, row {rows.iat[i]}"
        where += f", column {column.iat[i]!r}" if column.iat[i] else ""
        bad.examples.append(f"{where}: {reason.iat[i]}")
    kinds = reason[reason != ""].str.replace(r"unknown event .*", "unknown event", regex=True)
    bad.reasons.update(kinds.value_counts().to_dict())
    bad.check(interactions, max_bad_fraction)
    ok = (reason == "").to_numpy()
    watched = event.isin(list(WATCH_EVENTS)).to_numpy()
    bad.left_out.update(
        (event[ok & ~watched] + " events (not watch-like: no interaction)").value_counts().to_dict()
    )
    keep = ok & watched
    strength = event.map(EVENT_STRENGTH).astype(float)
    rating = value.fillna(strength).round().clip(1, 5)
    ratings = (
        pd.DataFrame(
            {
                "user_id": user[keep],
                "item_id": item[keep],
                "rating": rating[keep],
                "timestamp": ts[keep],
            }
        )
        .astype(np.int64)
        .reset_index(drop=True)
    )
    items_table, tag_names = _items(items_df, item_map, item_int, ratings)
    users_table = _users(users, user_map, user_int, ratings)
    maps = {k: v for k, v in (("user_id", user_map), ("item_id", item_map)) if v is not None}
    ml = MovieLens(ratings, items_table, users_table, tag_names)
    return OwnLog(ml, tag_names, maps, bad, {"user_id": user_int, "item_id": item_int})


def _items(
    df: pd.DataFrame | None, item_map: dict | None, integer: bool, ratings: pd.DataFrame
) -> tuple[pd.DataFrame, list[str]]:
    """The items table in MovieLens's layout: title, release date, the tag columns."""
    if df is None:  # only the log: its items, named by their ids
        df = pd.DataFrame({"item_id": np.unique(ratings.item_id)})
        back = {v: k for k, v in (item_map or {}).items()}
        df["title"] = df.item_id.map(back) if item_map else df.item_id.astype(str)
    else:
        key = df["item_id"].astype(str).str.strip()
        df = df.assign(item_id=_map_ids(df["item_id"], item_map, integer))
        if "title" not in df:
            df["title"] = key
        blank = _blank(df["title"])  # an item needs a name: its id when the table has none
        df["title"] = df["title"].where(~blank, key)
        df = df.dropna(subset=["item_id"])
    df["item_id"] = df["item_id"].astype(np.int64)
    df = df.drop_duplicates("item_id")
    tags = (
        df["tags"]
        .fillna("")
        .astype(str)
        .map(lambda t: [x.strip() for x in t.split("|") if x.strip()])
        if "tags" in df
        else pd.Series([[]] * len(df), index=df.index)
    )
    seen = pd.Series([t for ts in tags for t in ts]).value_counts()
    if len(seen) and set(seen.index) <= set(GENRES):
        names = list(GENRES)  # MovieLens's own genres keep their columns
    else:
        names = [str(t) for t in seen.index[: len(GENRES)]]
        names += [f"(unused {i})" for i in range(len(GENRES) - len(names))]
    col = {n: GENRES[j] for j, n in enumerate(names)}
    hot = np.zeros((len(df), len(GENRES)), np.int64)
    for r, ts in enumerate(tags):
        for t in ts:
            if t in col:
                hot[r, GENRES.index(col[t])] = 1
    out = pd.DataFrame(hot, columns=GENRES, index=df.index)
    release = df["release_ts"] if "release_ts" in df else pd.Series("", index=df.index)
    secs = _times(release.fillna("").astype(str))
    date = pd.to_datetime(secs, unit="s", errors="coerce")
    base = pd.DataFrame(
        {
            "item_id": df["item_id"],
            "title": df["title"].fillna("").astype(str) if "title" in df else "",
            "release_date": date.dt.strftime("%d-%b-%Y"),
        }
    )
    return _finish_items(pd.concat([base, out], axis=1)), names


def _users(
    path: str | None, user_map: dict | None, integer: bool, ratings: pd.DataFrame
) -> pd.DataFrame:
    """The users table in MovieLens's layout; users without a row get unknown demographics."""
    cols = ["user_id", "age", "gender", "occupation", "zip_code"]
    if path is None:
        ids = np.unique(ratings.user_id)
        return pd.DataFrame(
            {"user_id": ids, "age": 0, "gender": "", "occupation": "", "zip_code": ""}
        )[cols]
    df = _read(path, "users", ("user_id",))
    df = df.assign(user_id=_map_ids(df["user_id"], user_map, integer)).dropna(subset=["user_id"])
    for c, default in (("age", "0"), ("gender", ""), ("occupation", ""), ("zip_code", "")):
        df[c] = df[c].fillna(default).astype(str) if c in df else default
    df["age"] = pd.to_numeric(df["age"], errors="coerce").fillna(0).astype(np.int64)
    df["user_id"] = df["user_id"].astype(np.int64)
    return df[cols].drop_duplicates("user_id").reset_index(drop=True)


def write_movielens(ml: MovieLens, folder: str) -> dict[str, str]:
    """MovieLens 100K written out in the documented format (every rating an event ``rate``
    with its value): the demo's reader as an adapter to it. -> the three paths."""

    fs, root = fsspec.core.url_to_fs(folder)
    fs.makedirs(root, exist_ok=True)
    paths = {k: f"{folder.rstrip('/')}/{k}.csv" for k in ("interactions", "items", "users")}
    r = ml.ratings
    inter = pd.DataFrame(
        {
            "user_id": r.user_id,
            "item_id": r.item_id,
            "timestamp": r.timestamp,
            "event": "rate",
            "value": r.rating,
        }
    )
    it = ml.items
    tags = it[GENRES].apply(lambda row: "|".join(g for g in GENRES if row[g]), axis=1)
    items = pd.DataFrame(
        {
            "item_id": it.item_id,
            "title": it.title,
            "tags": tags,
            "release_ts": it.release_ts.where(it.year > 0),
        }
    )
    for key, table in (("interactions", inter), ("items", items), ("users", ml.users)):
        with fsspec.open(paths[key], "w") as f:
            table.to_csv(f, index=False)
    return paths
