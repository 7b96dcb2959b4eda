"""The human-review queue: posts in a head's low-confidence band wait here for a reviewer, and
reviewers' labels become training rows for the next model (the book's loop: natural labels
to train, human labels where the model is unsure).

Durable, and one queue for the whole cluster (the state layer, ``mlsd.state``: SQLite on a
laptop, Postgres on a cluster): a post is committed to the queue before the answer that says
"review" leaves the server, in one transaction, so nothing half-written is ever visible. Review
ids are unguessable (a keyed permutation), a review is idempotent (the same labels again change
nothing) and a conflicting second review is refused rather than silently overwriting the first.
"""

from __future__ import annotations

import json
import time

from sqlalchemy import func, select, update

from mlsd.state import Database, Log
from mlsd.state.schema import hc_reviews as REVIEWS

STATUSES = ("pending", "done")
COLS = (
    REVIEWS.c.seq, REVIEWS.c.post_key, REVIEWS.c.post, REVIEWS.c.scores, REVIEWS.c.reasons,
    REVIEWS.c.model, REVIEWS.c.created, REVIEWS.c.status, REVIEWS.c.labels, REVIEWS.c.reviewer,
    REVIEWS.c.reviewed,
)  # fmt: skip


class ReviewNotFound(KeyError):
    pass


class ReviewConflict(ValueError):
    pass


class ReviewQueue(Log):
    """The one queue every ingress replica on every node writes and every reviewer reads."""

    def __init__(self, store: str | Database):
        super().__init__(store)
        self.ids = self.db.ids("hc_reviews")

    def enqueue(
        self, post_id: str, post: dict, scores: dict, reasons: list[str], model: str
    ) -> int:
        """Commit one post for review; returns its review id. The same ``post_id`` again (a
        client's retry, on any replica) returns the first review's id: one post, one review
        (a unique key, so two replicas racing on the same post still make one row)."""
        with self.db.write("hc_reviews") as c:
            c.execute(
                self.db.insert_ignore(REVIEWS).values(
                    post_key=post_id,
                    post=json.dumps(post),
                    scores=json.dumps(scores),
                    reasons=json.dumps(reasons),
                    model=model,
                    created=time.time(),
                    status="pending",
                )
            )
            seq = c.execute(select(REVIEWS.c.seq).where(REVIEWS.c.post_key == post_id)).scalar_one()
        return self.ids.live_id(int(seq))

    def _row(self, r) -> dict:
        seq, post_id, post, scores, reasons, model, created, status, labels, reviewer, rt = r
        return {
            "review_id": self.ids.live_id(seq),
            "post_id": post_id,
            "post": json.loads(post),
            "scores": json.loads(scores),
            "reasons": json.loads(reasons),
            "model": model,
            "created": created,
            "status": status,
            "labels": json.loads(labels) if labels else None,
            "reviewer": reviewer,
            "reviewed": rt,
        }

    def list(self, status: str = "pending", limit: int = 50, after: int = 0) -> list[dict]:
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}")
        with self.db.read() as c:
            rows = c.execute(
                select(*COLS)
                .where(REVIEWS.c.status == status, REVIEWS.c.seq > after)
                .order_by(REVIEWS.c.seq)
                .limit(int(limit))
            ).all()
        return [self._row(r) for r in rows]

    def get(self, review_id: int) -> dict:
        seq = self.ids.seq_of(int(review_id))
        r = None
        if seq is not None:
            with self.db.read() as c:
                r = c.execute(select(*COLS).where(REVIEWS.c.seq == seq)).first()
        if r is None:
            raise ReviewNotFound(review_id)
        return self._row(r)

    def submit(self, review_id: int, labels: dict[str, int], reviewer: str) -> dict:
        """A reviewer's labels (head -> 0 / 1). The same labels again: no change; other labels
        for a done review: :class:`ReviewConflict`."""
        seq = self.ids.seq_of(int(review_id))
        clean = {str(h): int(bool(v)) for h, v in sorted(labels.items())}
        if seq is None:
            raise ReviewNotFound(review_id)
        with self.db.write() as c:
            r = c.execute(
                select(REVIEWS.c.status, REVIEWS.c.labels).where(REVIEWS.c.seq == seq)
            ).first()
            if r is None:
                raise ReviewNotFound(review_id)
            if r[0] == "done":
                if json.loads(r[1]) != clean:
                    raise ReviewConflict(f"review {review_id} already has other labels")
            else:
                c.execute(
                    update(REVIEWS)
                    .where(REVIEWS.c.seq == seq)
                    .values(
                        status="done",
                        labels=json.dumps(clean),
                        reviewer=reviewer,
                        reviewed=time.time(),
                    )
                )
        return self.get(review_id)

    def reviewed(self) -> list[dict]:
        """Every done review, oldest first: the human-labelled rows the next training run folds
        in."""
        with self.db.read() as c:
            rows = c.execute(
                select(*COLS).where(REVIEWS.c.status == "done").order_by(REVIEWS.c.seq)
            ).all()
        return [self._row(r) for r in rows]

    def counts(self) -> dict[str, int]:
        with self.db.read() as c:
            rows = c.execute(
                select(REVIEWS.c.status, func.count()).group_by(REVIEWS.c.status)
            ).all()
        return {s: int(n) for s, n in rows}
