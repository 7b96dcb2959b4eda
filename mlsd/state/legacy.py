"""Stores written before the state layer (one SQLite file per log, opened with ``sqlite3``,
uploaded bytes as BLOBs) carried over by ``init``: nothing they acknowledged is lost, and every
id they handed out keeps naming the same item.

The old file is kept beside the new one as ``<name>.before-state-layer`` (with its WAL folded
in); its rows are copied with their sequence numbers and its id key, and its BLOBs go to the
object store, the rows keeping their keys.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import insert, update

from mlsd.state import schema
from mlsd.state.objects import ObjectStore
from mlsd.state.url import StateError

if TYPE_CHECKING:
    from mlsd.state.db import Database

log = logging.getLogger(__name__)
SUFFIX = ".before-state-layer"
# the old table of each log -> (the new table, the log whose id key it carried)
TABLES = {
    "images": ("vs_images", "vs_images"), "deletions": ("vs_deletions", None),
    "videos": ("video_uploads", "video_uploads"), "changes": ("video_changes", None),
    "events": ("rec_events", None), "forgotten": ("rec_forgotten", None),
    "reviews": ("hc_reviews", "hc_reviews"), "keys": ("auth_keys", None),
}  # fmt: skip
LEGACY = set(TABLES) | {"thumbs", "counts"}


def legacy_tables(path: Path) -> set[str]:
    """The old log tables in an SQLite file (empty for a state-layer store or no file)."""
    if not path.exists():
        return set()
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        names = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    finally:
        con.close()
    return LEGACY & names if "mlsd_meta" not in names else set()


def _rows(con: sqlite3.Connection, table: str) -> list[dict]:
    con.row_factory = sqlite3.Row
    return [dict(r) for r in con.execute(f"SELECT * FROM {table} ORDER BY 1")]  # noqa: S608


def _convert(table: str, row: dict, con, objects: ObjectStore | None) -> dict:
    """One old row as its new table's row (bytes to the object store)."""
    if table == "keys":
        return row  # the same columns
    created = row.pop("created", None) or row.pop("received", None) or 0.0
    if table == "images":
        data = row.pop("image", None)
        row["image_key"] = _put(objects, "visual_search/images", data, table)
        row["private"], row["unsafe"] = bool(row["private"]), bool(row["unsafe"])
    elif table == "videos":
        doc = json.loads(row["doc"] or "{}")
        doc.pop("video_id", None)  # derived from seq now
        row["doc"] = json.dumps(doc)
        thumb = con.execute("SELECT jpeg FROM thumbs WHERE seq = ?", (row["seq"],)).fetchone()
        row["thumb_key"] = _put(objects, "video_search/thumbs", thumb and thumb[0], table, ".jpg")
    elif table == "events":
        row["unknown_user"], row["unknown_video"] = (
            bool(row["unknown_user"]),
            bool(row["unknown_video"]),
        )
        row.pop("received", None)
    elif table == "reviews":
        row["post_key"] = row.pop("post_id")
    row["created"] = float(created)
    return row


def _put(objects: ObjectStore | None, prefix: str, data, table: str, suffix="") -> str | None:
    if data is None:
        return None
    if objects is None:
        raise StateError(f"the old {table} log holds uploaded bytes: give it an object store")
    return objects.put(ObjectStore.new_key(prefix, suffix), bytes(data))


def set_aside(path: Path) -> Path:
    """Move an old log file aside (its WAL folded in first); -> where it went."""
    old = path.with_name(path.name + SUFFIX)
    if old.exists():
        raise StateError(f"{old} exists already: a migration was interrupted; move it back")
    con = sqlite3.connect(path)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the WAL's commits into the file
    con.close()
    os.replace(path, old)
    for ext in ("-wal", "-shm"):
        Path(f"{path}{ext}").unlink(missing_ok=True)
    return old


def copy_legacy(old: Path, db: Database, objects: ObjectStore | None) -> dict[str, int]:
    """Copy an old log file's rows into a fresh state-layer store, with their sequence
    numbers and the id key their public ids were made with; -> rows copied per table."""
    con = sqlite3.connect(f"file:{old}?mode=ro", uri=True)
    copied = {}
    try:
        present = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        key = None
        if "meta" in present:
            row = con.execute("SELECT v FROM meta WHERE k = 'id_key'").fetchone()
            key = bytes(row[0]) if row else None
        with db.write() as c:
            for table, (new, id_log) in TABLES.items():
                if table not in present:
                    continue
                rows = [_convert(table, r, con, objects) for r in _rows(con, table)]
                if rows:
                    c.execute(insert(schema.metadata.tables[new]), rows)
                copied[new] = len(rows)
                if id_log is not None and key is not None:  # the ids already handed out
                    c.execute(
                        update(schema.meta)
                        .where(schema.meta.c.k == f"id_key:{id_log}")
                        .values(v=key)
                    )
            if "events" in present:
                n, u, v = con.execute(
                    "SELECT COUNT(*), SUM(unknown_user), SUM(unknown_video) FROM events"
                ).fetchone()
                for k, count in (("events", n), ("unknown_user", u), ("unknown_video", v)):
                    counts = schema.rec_counts
                    c.execute(update(counts).where(counts.c.k == k).values(n=count or 0))
    finally:
        con.close()
    log.warning("carried %s over into the state layer at %s: %s", old, db.url, copied)
    return copied
