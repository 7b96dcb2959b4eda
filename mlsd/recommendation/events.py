"""The durable interaction log: feedback events recorded while serving, read by the next
training run. Each event is committed (SQLite WAL, synchronous=FULL) before it is
acknowledged. Events for users or videos the current model does not know are kept and flagged,
never dropped: new users and videos are exactly what the next training run must learn.

A user may have their history forgotten: their logged events are deleted and a tombstone
(table ``forgotten``) is committed in the same transaction. Serving ignores what a model trained
before the tombstone knew of them (trained factor, training history); the next training run
drops their rows from the base data set too, and records the last tombstone it took in.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from mlsd.durable import DurableLog

# business rule: how strongly each event says "watched and liked", on the rating scale
EVENT_STRENGTH = {
    "watch": 3.0, "complete": 4.0, "like": 5.0, "share": 5.0, "rate": 0.0,
    "click": 2.0, "impression": 0.0, "skip": 1.0, "dislike": 1.0,
}  # fmt: skip
WATCH_EVENTS = {"watch", "complete", "like", "share", "rate", "dislike"}


class EventLog(DurableLog):
    def __init__(self, path: str | Path):
        super().__init__(
            path,
            """CREATE TABLE IF NOT EXISTS events (
                 seq INTEGER PRIMARY KEY AUTOINCREMENT,
                 user_id INTEGER NOT NULL, video_id INTEGER NOT NULL, event TEXT NOT NULL,
                 rating REAL, timestamp INTEGER NOT NULL,
                 unknown_user INTEGER NOT NULL, unknown_video INTEGER NOT NULL,
                 received REAL DEFAULT ((julianday('now') - 2440587.5) * 86400.0)
               )""",
            "CREATE INDEX IF NOT EXISTS events_user ON events (user_id)",  # (+ rowid = seq)
            "CREATE TABLE IF NOT EXISTS counts (k TEXT PRIMARY KEY, n INTEGER NOT NULL)",
            """CREATE TABLE IF NOT EXISTS forgotten (
                 seq INTEGER PRIMARY KEY AUTOINCREMENT, user_id INTEGER NOT NULL,
                 events_removed INTEGER NOT NULL, forgotten_by TEXT,
                 created REAL DEFAULT ((julianday('now') - 2440587.5) * 86400.0)
               )""",
            "CREATE INDEX IF NOT EXISTS forgotten_user ON forgotten (user_id, seq)",
        )
        with self._lock:  # counters kept with each insert, so health never scans the log
            if self._conn.execute("SELECT COUNT(*) FROM counts").fetchone()[0] == 0:
                u, v, n = self._scan_flagged()
                self._conn.executemany(
                    "INSERT INTO counts VALUES (?, ?)",
                    [("events", n), ("unknown_user", u), ("unknown_video", v)],
                )
                self._conn.commit()

    def append(
        self,
        user_id: int,
        video_id: int,
        event: str,
        timestamp: int,
        rating: float | None = None,
        unknown_user: bool = False,
        unknown_video: bool = False,
    ) -> int:
        """Commit one event; returns its sequence number (the acknowledgement)."""
        with self._lock:
            cur = self._conn.execute(
                "INSERT INTO events (user_id, video_id, event, rating, timestamp, unknown_user,"
                " unknown_video) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    user_id,
                    video_id,
                    event,
                    rating,
                    timestamp,
                    int(unknown_user),
                    int(unknown_video),
                ),
            )
            self._conn.execute(
                "UPDATE counts SET n = n + CASE k WHEN 'events' THEN 1"
                " WHEN 'unknown_user' THEN ? WHEN 'unknown_video' THEN ? END",
                (int(unknown_user), int(unknown_video)),
            )
            self._conn.commit()
            return int(cur.lastrowid)

    def forget(self, user_id: int, by: str | None = None) -> int:
        """Delete every event of the user and commit a tombstone, in one transaction;
        -> how many events were removed."""
        with self._lock:
            u, v, n = self._conn.execute(
                "SELECT COALESCE(SUM(unknown_user),0), COALESCE(SUM(unknown_video),0), COUNT(*)"
                " FROM events WHERE user_id = ?",
                (user_id,),
            ).fetchone()
            self._conn.execute("DELETE FROM events WHERE user_id = ?", (user_id,))
            self._conn.execute(
                "UPDATE counts SET n = n - CASE k WHEN 'events' THEN ? WHEN 'unknown_user'"
                " THEN ? WHEN 'unknown_video' THEN ? END",
                (int(n), int(u), int(v)),
            )
            self._conn.execute(
                "INSERT INTO forgotten (user_id, events_removed, forgotten_by) VALUES (?, ?, ?)",
                (user_id, int(n), by),
            )
            self._conn.commit()
            return int(n)

    def is_forgotten(self, user_id: int, after: int = 0) -> bool:
        """Was the user's history forgotten after tombstone ``after`` (the last one the
        serving model's training took in)? An indexed lookup: cheap per request."""
        with self._lock:
            row = self._conn.execute(
                "SELECT 1 FROM forgotten WHERE user_id = ? AND seq > ? LIMIT 1", (user_id, after)
            ).fetchone()
        return row is not None

    def forgotten(self) -> tuple[set[int], int]:
        """(users whose history was forgotten, the last tombstone's sequence number)."""
        with self._lock:
            rows = self._conn.execute("SELECT user_id, seq FROM forgotten").fetchall()
        return {int(u) for u, _ in rows}, max((int(s) for _, s in rows), default=0)

    def for_user(self, user_id: int, limit: int = 1000) -> tuple[np.ndarray, np.ndarray]:
        """(items, strengths) the user watched according to the log, oldest first: the
        newest ``limit`` events only, so one request costs the same however long a user's
        history grows."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT video_id, event, rating FROM events WHERE user_id = ?"
                " ORDER BY seq DESC LIMIT ?",
                (user_id, limit),
            ).fetchall()[::-1]
        rows = [r for r in rows if r[1] in WATCH_EVENTS]
        items = np.array([r[0] for r in rows], np.int64)
        strength = np.array(
            [r[2] if r[2] is not None else EVENT_STRENGTH.get(r[1], 0.0) for r in rows],
            np.float32,
        )
        return items, strength

    def to_ratings(self) -> pd.DataFrame:
        """Watch-like events as rating rows (user_id, item_id, rating, timestamp) for training;
        an explicit rating wins over the event's default strength."""
        with self._lock:
            df = pd.read_sql_query(
                "SELECT user_id, video_id AS item_id, event, rating, timestamp FROM events",
                self._conn,
            )
        df = df[df.event.isin(WATCH_EVENTS)]
        default = df.event.map(EVENT_STRENGTH).astype(float)
        df = df.assign(rating=df.rating.astype(float).fillna(default).round().clip(1, 5))
        return df[["user_id", "item_id", "rating", "timestamp"]].astype(np.int64)

    def _scan_flagged(self) -> tuple[int, int, int]:
        u, v, n = self._conn.execute(
            "SELECT COALESCE(SUM(unknown_user),0), COALESCE(SUM(unknown_video),0), COUNT(*) "
            "FROM events"
        ).fetchone()
        return int(u), int(v), int(n)

    def flagged(self) -> dict[str, int]:
        """Event counts from the counters (constant time, whatever the log's size)."""
        with self._lock:
            rows = dict(self._conn.execute("SELECT k, n FROM counts").fetchall())
        return {k: int(rows.get(k, 0)) for k in ("events", "unknown_user", "unknown_video")}

    def __len__(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM events").fetchone()[0])
