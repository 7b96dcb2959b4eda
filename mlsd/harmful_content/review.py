"""The human-review queue: posts in a head's low-confidence band wait here for a reviewer, and
reviewers' labels become training rows for the next model (the book's loop: natural labels
to train, human labels where the model is unsure).

Durable (:class:`mlsd.durable.DurableLog`: SQLite, WAL, synchronous=FULL): a post is committed
to the queue before the answer that says "review" leaves the server, in one transaction, so
nothing half-written is ever visible. Review ids are unguessable (a keyed permutation), a
review is idempotent (the same labels again change nothing) and a conflicting second review
is refused rather than silently overwriting the first.
"""

from __future__ import annotations

import json
import time

from mlsd.durable import DurableLog

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS reviews (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        post_id TEXT NOT NULL,
        post TEXT NOT NULL,
        scores TEXT NOT NULL,
        reasons TEXT NOT NULL,
        model TEXT NOT NULL,
        created REAL NOT NULL,
        status TEXT NOT NULL DEFAULT 'pending',
        labels TEXT,
        reviewer TEXT,
        reviewed REAL)""",
    "CREATE INDEX IF NOT EXISTS reviews_status ON reviews (status, seq)",
    "CREATE INDEX IF NOT EXISTS reviews_post ON reviews (post_id)",
)
STATUSES = ("pending", "done")


class ReviewNotFound(KeyError):
    pass


class ReviewConflict(ValueError):
    pass


class ReviewQueue(DurableLog):
    def __init__(self, path):
        super().__init__(path, *SCHEMA)

    def enqueue(self, post_id: str, post: dict, scores: dict, reasons: list[str],
                model: str) -> int:  # fmt: skip
        """Commit one post for review; returns its review id. The same ``post_id`` again (a
        client's retry) returns the first review's id: one post, one review."""
        with self._lock, self._conn:
            r = self._conn.execute("SELECT seq FROM reviews WHERE post_id = ? LIMIT 1",
                                   (post_id,)).fetchone()  # fmt: skip
            if r is not None:
                return self.live_id(int(r[0]))
            cur = self._conn.execute(
                "INSERT INTO reviews (post_id, post, scores, reasons, model, created) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (post_id, json.dumps(post), json.dumps(scores), json.dumps(reasons), model,
                 time.time()),
            )  # fmt: skip
            return self.live_id(int(cur.lastrowid))

    def _row(self, r) -> dict:
        seq, post_id, post, scores, reasons, model, created, status, labels, reviewer, rt = r
        return {"review_id": self.live_id(seq), "post_id": post_id, "post": json.loads(post),
                "scores": json.loads(scores), "reasons": json.loads(reasons), "model": model,
                "created": created, "status": status,
                "labels": json.loads(labels) if labels else None, "reviewer": reviewer,
                "reviewed": rt}  # fmt: skip

    def list(self, status: str = "pending", limit: int = 50, after: int = 0) -> list[dict]:
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}")
        with self._lock:
            rows = self._conn.execute(
                "SELECT * FROM reviews WHERE status = ? AND seq > ? ORDER BY seq LIMIT ?",
                (status, after, int(limit)),
            ).fetchall()
        return [self._row(r) for r in rows]

    def get(self, review_id: int) -> dict:
        seq = self.seq_of(int(review_id))
        with self._lock:
            r = None if seq is None else self._conn.execute(
                "SELECT * FROM reviews WHERE seq = ?", (seq,)).fetchone()  # fmt: skip
        if r is None:
            raise ReviewNotFound(review_id)
        return self._row(r)

    def submit(self, review_id: int, labels: dict[str, int], reviewer: str) -> dict:
        """A reviewer's labels (head -> 0 / 1). The same labels again: no change; other labels
        for a done review: :class:`ReviewConflict`."""
        seq = self.seq_of(int(review_id))
        clean = {str(h): int(bool(v)) for h, v in sorted(labels.items())}
        with self._lock, self._conn:
            r = None if seq is None else self._conn.execute(
                "SELECT status, labels FROM reviews WHERE seq = ?", (seq,)).fetchone()  # fmt: skip
            if r is None:
                raise ReviewNotFound(review_id)
            if r[0] == "done":
                if json.loads(r[1]) != clean:
                    raise ReviewConflict(f"review {review_id} already has other labels")
            else:
                self._conn.execute(
                    "UPDATE reviews SET status = 'done', labels = ?, reviewer = ?, reviewed = ? "
                    "WHERE seq = ?",
                    (json.dumps(clean), reviewer, time.time(), seq),
                )
        return self.get(review_id)

    def reviewed(self) -> list[dict]:
        """Every done review, oldest first: the human-labelled rows the next training run folds
        in."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT * FROM reviews WHERE status = 'done' ORDER BY seq").fetchall()  # fmt: skip
        return [self._row(r) for r in rows]

    def counts(self) -> dict[str, int]:
        with self._lock:
            rows = self._conn.execute("SELECT status, COUNT(*) FROM reviews GROUP BY status")
            return {s: int(n) for s, n in rows.fetchall()}
