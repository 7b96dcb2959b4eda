"""Every table the apps keep, in one place (SQLAlchemy Core), so one command creates and
migrates a store and one database can hold every app's state on a cluster.

Logs have a ``seq`` identity key (``INTEGER PRIMARY KEY AUTOINCREMENT`` on SQLite, an identity
column on Postgres): never reused, so "the rows after the last one I saw" stays meaningful
after deletions. Appends to a log are serialised per log (:meth:`Database.write`), so ``seq``
order is commit order. Timestamps are supplied by the app (Unix seconds), not by a database
default that differs per dialect. Bytes live in the object store; rows keep their keys.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    Identity,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Table,
    Text,
)

SCHEMA_VERSION = 1
metadata = MetaData()
Seq = BigInteger().with_variant(Integer, "sqlite")  # SQLite: a rowid alias (INTEGER)


def _log(name: str, *columns, **kw) -> Table:
    """An append-only log: ``seq`` first, created by the app's clock."""
    return Table(
        name,
        metadata,
        Column("seq", Seq, Identity(), primary_key=True),
        *columns,
        Column("created", Float, nullable=False),
        sqlite_autoincrement=True,
        **kw,
    )


# schema version, and each log's key for its public ids (mlsd.state.ids)
meta = Table(
    "mlsd_meta",
    metadata,
    Column("k", Text, primary_key=True),
    Column("v", LargeBinary, nullable=False),
)

# -- visual search: images added while serving, and tombstones ----------------------------------
vs_images = _log(
    "vs_images",
    Column("owner", Text),
    Column("private", Boolean, nullable=False),
    Column("unsafe", Boolean, nullable=False),
    Column("signature", Text),
    Column("embedding", LargeBinary, nullable=False),  # float32; b"" once deleted
    Column("dim", Integer, nullable=False),  # 0 once deleted
    Column("model_version", Text, nullable=False),
    Column("image_key", Text),  # the upload's bytes in the object store (None: pruned/deleted)
)
Index("vs_images_owner", vs_images.c.owner)
Index("vs_images_created", vs_images.c.created)
vs_deletions = _log(
    "vs_deletions",
    Column("image_id", BigInteger, nullable=False, unique=True),
    Column("deleted_by", Text),
)

# -- video search: uploads, edits and deletions ----------------------------------------------
video_uploads = _log(
    "video_uploads",
    Column("doc", Text, nullable=False),  # VideoDoc as JSON (its id derives from seq)
    Column("feat", LargeBinary, nullable=False),  # b"" once deleted
    Column("prob", LargeBinary, nullable=False),
    Column("thumb_key", Text),  # JPEG in the object store
)
video_changes = _log(
    "video_changes",
    Column("video_id", BigInteger, nullable=False),
    Column("kind", Text, nullable=False),  # edit | delete
    Column("fields", Text),
    Column("uri", Text),
    Column("changed_by", Text),
)
Index("video_changes_video", video_changes.c.video_id, video_changes.c.kind)

# -- recommendation: feedback events, forget-my-history tombstones -----------------------------
rec_events = _log(
    "rec_events",
    Column("user_id", BigInteger, nullable=False),
    Column("video_id", BigInteger, nullable=False),
    Column("event", Text, nullable=False),
    Column("rating", Float),
    Column("timestamp", BigInteger, nullable=False),
    Column("unknown_user", Boolean, nullable=False),
    Column("unknown_video", Boolean, nullable=False),
)
Index("rec_events_user", rec_events.c.user_id, rec_events.c.seq)
rec_counts = Table(  # kept with each insert, so health never scans the log
    "rec_counts",
    metadata,
    Column("k", Text, primary_key=True),
    Column("n", BigInteger, nullable=False),
)
rec_forgotten = _log(
    "rec_forgotten",
    Column("user_id", BigInteger, nullable=False),
    Column("events_removed", BigInteger, nullable=False),
    Column("forgotten_by", Text),
)
Index("rec_forgotten_user", rec_forgotten.c.user_id, rec_forgotten.c.seq)

# -- harmful content: the human-review queue -----------------------------------------------------
hc_reviews = _log(
    "hc_reviews",
    Column("post_key", Text, nullable=False, unique=True),  # "<caller>/<post_id>": one review
    Column("post", Text, nullable=False),
    Column("scores", Text, nullable=False),
    Column("reasons", Text, nullable=False),
    Column("model", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("labels", Text),
    Column("reviewer", Text),
    Column("reviewed", Float),
)
Index("hc_reviews_status", hc_reviews.c.status, hc_reviews.c.seq)

# -- API keys --------------------------------------------------------------------------------
auth_keys = Table(
    "auth_keys",
    metadata,
    Column("key_id", Text, primary_key=True),
    Column("user", Text, nullable=False),
    Column("scopes", Text, nullable=False),
    Column("digest", Text, nullable=False),
    Column("created", Float, nullable=False),
    Column("revoked", Float),
    Column("note", Text),
)

# logs whose rows carry public ids (a per-log key permutes seq -> id)
ID_LOGS = ("vs_images", "video_uploads", "hc_reviews")
