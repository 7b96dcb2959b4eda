"""The durable interaction log: feedback events recorded while serving, read by the next
training run. Each event is committed to the state layer (``mlsd.state``: SQLite on a laptop,
Postgres on a cluster) before it is acknowledged. Events for users or videos the current model
does not know are kept and flagged, never dropped: new users and videos are exactly what the
next training run must learn.

A user may have their history forgotten: their logged events are deleted and a tombstone
(table ``rec_forgotten``) is committed in the same transaction. Serving ignores what a model
trained before the tombstone knew of them (trained factor, training history); the next training
run drops their rows from the base data set too, and records the last tombstone it took in.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
from sqlalchemy import bindparam, case, delete, func, insert, select, update

from mlsd.state import Log
from mlsd.state.schema import rec_counts as COUNTS
from mlsd.state.schema import rec_events as EVENTS
from mlsd.state.schema import rec_forgotten as FORGOTTEN

# the statements a replica runs per request: built once, parameters per call
INSERT = insert(EVENTS)
COUNT = update(COUNTS).values(
    n=COUNTS.c.n
    + case(
        (COUNTS.c.k == "events", bindparam("events")),
        (COUNTS.c.k == "unknown_user", bindparam("unknown_user")),
        else_=bindparam("unknown_video"),
    )
)
FOR_USER = (
    select(EVENTS.c.video_id, EVENTS.c.event, EVENTS.c.rating)
    .where(EVENTS.c.user_id == bindparam("user_id"))
    .order_by(EVENTS.c.seq.desc())
    .limit(bindparam("limit"))
)
IS_FORGOTTEN = (
    select(FORGOTTEN.c.seq)
    .where(FORGOTTEN.c.user_id == bindparam("user_id"), FORGOTTEN.c.seq > bindparam("after"))
    .limit(1)
)

# business rule: how strongly each event says "watched and liked", on the rating scale
EVENT_STRENGTH = {
    "watch": 3.0, "complete": 4.0, "like": 5.0, "share": 5.0, "rate": 0.0,
    "click": 2.0, "impression": 0.0, "skip": 1.0, "dislike": 1.0,
}  # fmt: skip
WATCH_EVENTS = {"watch", "complete", "like", "share", "rate", "dislike"}


class EventLog(Log):
    """Feedback events and forget-my-history tombstones in the state layer (one store that
    every replica on every node, and the training job, reads)."""

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
        with self.db.write("rec_events") as c:
            row = {
                "user_id": int(user_id),
                "video_id": int(video_id),
                "event": event,
                "rating": rating,
                "timestamp": int(timestamp),
                "unknown_user": bool(unknown_user),
                "unknown_video": bool(unknown_video),
                "created": time.time(),
            }
            seq = self.db.insert(c, INSERT, row)
            self._count(c, 1, int(unknown_user), int(unknown_video))
        return seq

    def _count(self, c, events: int, unknown_user: int, unknown_video: int) -> None:
        """The counters, kept in the same transaction as the rows they count."""
        self.db.run(
            c,
            COUNT,
            {"events": events, "unknown_user": unknown_user, "unknown_video": unknown_video},
        )

    def forget(self, user_id: int, by: str | None = None) -> int:
        """Delete every event of the user and commit a tombstone, in one transaction;
        -> how many events were removed."""
        with self.db.write("rec_forgotten") as c:
            u, v, n = c.execute(
                select(
                    func.coalesce(func.sum(case((EVENTS.c.unknown_user, 1), else_=0)), 0),
                    func.coalesce(func.sum(case((EVENTS.c.unknown_video, 1), else_=0)), 0),
                    func.count(),
                ).where(EVENTS.c.user_id == int(user_id))
            ).one()
            c.execute(delete(EVENTS).where(EVENTS.c.user_id == int(user_id)))
            self._count(c, -int(n), -int(u), -int(v))
            c.execute(
                insert(FORGOTTEN).values(
                    user_id=int(user_id),
                    events_removed=int(n),
                    forgotten_by=by,
                    created=time.time(),
                )
            )
        return int(n)

    def is_forgotten(self, user_id: int, after: int = 0) -> bool:
        """Was the user's history forgotten after tombstone ``after`` (the last one the
        serving model's training took in)? An indexed lookup: cheap per request."""
        with self.db.read() as c:
            rows = self.db.rows(c, IS_FORGOTTEN, {"user_id": int(user_id), "after": int(after)})
        return bool(rows)

    def forgotten(self) -> tuple[set[int], int]:
        """(users whose history was forgotten, the last tombstone's sequence number)."""
        with self.db.read() as c:
            rows = c.execute(select(FORGOTTEN.c.user_id, FORGOTTEN.c.seq)).all()
        return {int(u) for u, _ in rows}, max((int(s) for _, s in rows), default=0)

    def for_user(self, user_id: int, limit: int = 1000) -> tuple[np.ndarray, np.ndarray]:
        """(items, strengths) the user watched according to the log, oldest first: the
        newest ``limit`` events only, so one request costs the same however long a user's
        history grows."""
        with self.db.read() as c:
            rows = self.db.rows(c, FOR_USER, {"user_id": int(user_id), "limit": int(limit)})[::-1]
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
        q = select(
            EVENTS.c.user_id,
            EVENTS.c.video_id.label("item_id"),
            EVENTS.c.event,
            EVENTS.c.rating,
            EVENTS.c.timestamp,
        )
        with self.db.read() as c:
            df = pd.DataFrame(c.execute(q).all(), columns=list(q.selected_columns.keys()))
        df = df[df.event.isin(WATCH_EVENTS)]
        default = df.event.map(EVENT_STRENGTH).astype(float)
        df = df.assign(rating=df.rating.astype(float).fillna(default).round().clip(1, 5))
        return df[["user_id", "item_id", "rating", "timestamp"]].astype(np.int64)

    def flagged(self) -> dict[str, int]:
        """Event counts from the counters (constant time, whatever the log's size)."""
        with self.db.read() as c:
            rows = dict(c.execute(select(COUNTS.c.k, COUNTS.c.n)).all())
        return {k: int(rows.get(k, 0)) for k in ("events", "unknown_user", "unknown_video")}

    def __len__(self) -> int:
        with self.db.read() as c:
            return int(c.execute(select(func.count()).select_from(EVENTS)).scalar_one())
