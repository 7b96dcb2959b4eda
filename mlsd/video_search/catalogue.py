"""The video catalogue of video search: indexed videos (from an artifact) plus a durable log of
videos added while serving.

Each video keeps its time-pooled frame features and class probabilities (model-independent),
so every text-video model version, primary or shadow, projects the same catalogue into its
own space; and its text (title, description, tags) for the inverted index. Additions are
committed to a log in the state layer (``mlsd.state``: SQLite on a laptop, Postgres on a
cluster; thumbnails in its object store) before they are acknowledged; every replica on every
node replays the log on start and before each search, so an acknowledged video survives
restarts and is seen by all replicas. The next indexing job folds the log into a new artifact
version.

Edits (title, description, tags) and deletions are rows of the same log (``video_changes``),
committed before they are acknowledged; a deletion erases a live video's features, text and
thumbnail in the same transaction. Replicas read the changes before the additions, so a deleted
video is never indexed again. The catalogue job applies the changes by URI (a catalogue video's
id is its position in a build) and records the last change it folded, which replicas skip.
"""

from __future__ import annotations

import functools
import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
from sqlalchemy import bindparam, func, insert, select, update

from mlsd.artifacts import Artifact, ArtifactError, ArtifactStore
from mlsd.state import LIVE_ID_BASE, Caller, Database, Log, ObjectStore, may_see
from mlsd.state.schema import video_changes as CHANGES
from mlsd.state.schema import video_uploads as UPLOADS

# the statements replicas run per search or request: built once, parameters per call
INSERT = insert(UPLOADS)
UPLOADS_SINCE = (
    select(UPLOADS.c.seq, UPLOADS.c.doc, UPLOADS.c.feat, UPLOADS.c.prob)
    .where(UPLOADS.c.seq > bindparam("after"), func.length(UPLOADS.c.feat) > 0)  # 0: deleted
    .order_by(UPLOADS.c.seq)
)
CHANGES_SINCE = (
    select(CHANGES.c.seq, CHANGES.c.video_id, CHANGES.c.kind, CHANGES.c.fields, CHANGES.c.uri)
    .where(CHANGES.c.seq > bindparam("after"))
    .order_by(CHANGES.c.seq)
)
THUMB_KEY = select(UPLOADS.c.thumb_key).where(UPLOADS.c.seq == bindparam("seq"))

EDITABLE = ("title", "description", "tags")


@dataclass
class VideoDoc:
    video_id: int
    title: str = ""
    description: str = ""
    tags: str = ""
    uri: str = ""
    duration: float = 0.0
    private: bool = False
    blocked: bool = False
    available: bool = True
    published: float = 0.0  # Unix seconds
    signature: list[int] = field(default_factory=list)  # sign bits of pooled features (dedup)
    owner: str | None = None  # the uploader (None: the catalogue's, an admin's to change)


@functools.lru_cache(maxsize=4)
def _planes(bits: int, dim: int) -> np.ndarray:
    return np.random.default_rng(7).standard_normal((bits, dim)).astype(np.float32)


def signature(feat: np.ndarray, bits: int = 64) -> list[int]:
    """Random-hyperplane hash of the pooled features: near-duplicate videos share most bits."""
    return (_planes(bits, len(feat)) @ np.asarray(feat, np.float32) > 0).astype(int).tolist()


def write_catalogue(
    store: ArtifactStore,
    name: str,
    videos: list[dict],
    meta: dict,
    sample: dict,
    live_log: str | None = None,
) -> str:
    """videos: rows with path, feat (1280,), prob (1000,); meta: file name -> doc fields.
    ``live_log``: the serving log whose edits and deletions of catalogue videos (by URI) this
    version takes in: a deleted video is left out, an edited one keeps its new text."""
    folded, deleted, edits = 0, set(), {}
    if live_log:  # a configured log that cannot be read fails the job, naming the store
        log = VideoLog(live_log)
        for seq, vid, kind, fields, uri in log.changes_since(0):
            folded = seq
            if vid >= LIVE_ID_BASE or not uri:
                continue  # an upload: kept in the log under its own id
            if kind == "delete":
                deleted.add(uri)
            else:
                edits.setdefault(uri, {}).update(fields)
        log.close()
    videos = [v for v in videos if str(v["path"]) not in deleted]
    writer = store.new_version(name)
    docs = []
    for i, v in enumerate(videos, start=1):
        m = {**meta.get(Path(v["path"]).name, {}), **edits.get(str(v["path"]), {})}
        docs.append(
            VideoDoc(
                video_id=i,
                title=m.get("title", Path(v["path"]).stem),
                description=m.get("description", ""),
                tags=m.get("tags", ""),
                uri=str(v["path"]),
                duration=float(m.get("duration", 0.0)),
                published=float(m.get("published", 0.0)),
                signature=signature(v["feat"]),
            )
        )
    np.savez(
        writer.path("videos.npz"),
        ids=np.array([d.video_id for d in docs], np.int64),
        feat=np.stack([v["feat"] for v in videos]).astype(np.float32),
        prob=np.stack([v["prob"] for v in videos]).astype(np.float32),
    )
    writer.path("docs.json").write_text(json.dumps([asdict(d) for d in docs]))
    return writer.commit(
        config={"sample": sample, "folded_changes": folded},
        data={"videos": len(docs), "deleted_left_out": len(deleted), "edited": len(edits)},
    )


class VideoLog(Log):
    """The append-only log of videos added at serving time, their edits and deletions, in the
    state layer (one store every replica on every node reads); thumbnails in the object store.
    """

    def __init__(self, store: str | Database, objects: str | ObjectStore | None = None):
        super().__init__(store, objects)
        self.ids = self.db.ids("video_uploads")

    def live_id(self, seq: int) -> int:
        return self.ids.live_id(seq)

    def append(
        self, doc: VideoDoc, feat: np.ndarray, prob: np.ndarray, thumb: bytes | None = None
    ) -> int:
        """Commit one video (its thumbnail first, to the object store); returns its public id
        (``live_id``), which ``doc.video_id`` is set to."""
        key = None
        if thumb:
            if self.objects is None:
                raise RuntimeError("this video log has no object store for thumbnails")
            key = self.objects.put(ObjectStore.new_key("video_search/thumbs", ".jpg"), thumb)
        fields = {k: v for k, v in asdict(doc).items() if k != "video_id"}
        try:
            row = {
                "doc": json.dumps(fields),
                "feat": np.asarray(feat, np.float32).tobytes(),
                "prob": np.asarray(prob, np.float32).tobytes(),
                "thumb_key": key,
                "created": time.time(),
            }
            with self.db.write("video_uploads") as c:
                seq = self.db.insert(c, INSERT, row)
        except BaseException:
            if key is not None:
                self.objects.delete(key)
            raise
        doc.video_id = self.live_id(int(seq))
        return doc.video_id

    def delete(self, video_id: int, uri: str = "", by: str | None = None) -> bool:
        """Tombstone a video and erase a live one's features, text and thumbnail, in one
        transaction; -> False if it was deleted already."""
        seq = self.ids.seq_of(video_id)
        key = None
        with self.db.write("video_changes") as c:
            # an upload's id is for ever; a catalogue id names another video after a rebuild
            # (the caller checks that its catalogue still has it)
            if (
                seq is not None
                and c.execute(
                    select(CHANGES.c.seq).where(
                        CHANGES.c.video_id == int(video_id), CHANGES.c.kind == "delete"
                    )
                ).first()
            ):
                return False
            c.execute(
                insert(CHANGES).values(
                    video_id=int(video_id),
                    kind="delete",
                    uri=uri,
                    changed_by=by,
                    created=time.time(),
                )
            )
            if seq is not None:
                key = c.execute(
                    select(UPLOADS.c.thumb_key).where(UPLOADS.c.seq == seq)
                ).scalar_one_or_none()
                c.execute(
                    update(UPLOADS)
                    .where(UPLOADS.c.seq == seq)
                    .values(doc="{}", feat=b"", prob=b"", thumb_key=None)
                )
        if key is not None:
            self.objects.delete(key)  # after the commit: no row names it
        return True

    def edit(self, video_id: int, fields: dict, uri: str = "", by: str | None = None) -> int:
        """Commit new text fields for a video; -> the change's sequence number."""
        bad = set(fields) - set(EDITABLE)
        if bad:
            raise ValueError(f"only {EDITABLE} can be edited, not {sorted(bad)}")
        with self.db.write("video_changes") as c:
            seq = c.execute(
                insert(CHANGES).values(
                    video_id=int(video_id),
                    kind="edit",
                    fields=json.dumps(fields),
                    uri=uri,
                    changed_by=by,
                    created=time.time(),
                )
            ).inserted_primary_key[0]
        return int(seq)

    def _changes_since(self, c, seq: int) -> list[tuple[int, int, str, dict, str]]:
        rows = self.db.rows(c, CHANGES_SINCE, {"after": seq})
        return [(int(s), int(v), k, json.loads(f) if f else {}, u or "") for s, v, k, f, u in rows]

    def _since(self, c, seq: int) -> list[tuple[int, VideoDoc, np.ndarray, np.ndarray]]:
        rows = self.db.rows(c, UPLOADS_SINCE, {"after": seq})
        return [
            (
                int(s),
                VideoDoc(**json.loads(d), video_id=self.live_id(int(s))),
                np.frombuffer(f, np.float32),
                np.frombuffer(p, np.float32),
            )
            for s, d, f, p in rows
        ]

    def changes_since(self, seq: int) -> list[tuple[int, int, str, dict, str]]:
        """(seq, video_id, kind, fields, uri) after ``seq``, in order."""
        with self.db.read() as c:
            return self._changes_since(c, seq)

    def since(self, seq: int) -> list[tuple[int, VideoDoc, np.ndarray, np.ndarray]]:
        with self.db.read() as c:
            return self._since(c, seq)

    def updates(self, change_seq: int, seq: int) -> tuple[list, list]:
        """(changes after ``change_seq``, additions after ``seq``) in one read: changes first,
        so a video deleted meanwhile (its row erased with the tombstone) is never added."""
        with self.db.read() as c:
            return self._changes_since(c, change_seq), self._since(c, seq)

    def thumbnail(self, video_id: int) -> bytes | None:
        seq = self.ids.seq_of(video_id)
        if seq is None or self.objects is None:
            return None
        with self.db.read() as c:
            found = self.db.rows(c, THUMB_KEY, {"seq": seq})
        return self.objects.get(found[0][0] if found else None)


@dataclass
class Refresh:
    """What one replay of the log changed."""

    new: list[VideoDoc] = field(default_factory=list)
    edited: list[VideoDoc] = field(default_factory=list)
    deleted: list[int] = field(default_factory=list)


class VideoCatalogue:
    """Artifact videos + replayed live additions, edits and deletions: docs, pooled features,
    class probabilities."""

    def __init__(
        self,
        art: Artifact,
        live_log: str | Database | None = None,
        objects: str | ObjectStore | None = None,
    ):
        try:
            with np.load(art.file("videos.npz")) as z:
                ids, feat, prob = z["ids"], z["feat"], z["prob"]
            docs = [VideoDoc(**d) for d in json.loads(art.file("docs.json").read_text())]
        except ArtifactError:
            raise
        except (KeyError, ValueError, TypeError, OSError) as e:
            raise ArtifactError(f"video catalogue {art.version} unusable: {e}") from e
        self.version = art.version
        self.docs = {d.video_id: d for d in docs}
        self.ids, self.feat, self.prob = list(ids.tolist()), [feat], [prob]
        self.log = VideoLog(live_log, objects) if live_log else None
        self.folded = int(art.config.get("folded_changes", 0))  # taken in by the catalogue job
        self.seq = self.change_seq = 0
        self._seen: int | None = None  # the store's version at the last refresh (SQLite)
        self.deleted: set[int] = set()
        self.uris = {d.video_id: d.uri for d in docs}

    def refresh(self) -> Refresh:
        """Replay log entries not seen yet: additions, then edits and deletions (read first:
        a deletion erases its row in the same transaction, so it is never added)."""
        out = Refresh()
        if self.log is None:
            return out
        version = self.log.db.version()  # before the read: a later commit shows next time
        if version is not None and version == self._seen:
            return out  # nothing was committed since the last refresh: no query at all
        changes, added = self.log.updates(self.change_seq, self.seq)
        self._seen = version
        for seq, doc, f, p in added:
            self.seq = seq
            if doc.video_id in self.deleted:
                continue
            self.docs[doc.video_id] = doc
            self.ids.append(doc.video_id)
            self.feat.append(f[None])
            self.prob.append(p[None])
            out.new.append(doc)
        for seq, vid, kind, fields, _ in changes:
            self.change_seq = seq
            if vid < LIVE_ID_BASE and seq <= self.folded:
                continue  # already in this artifact
            if kind == "delete":
                self.deleted.add(vid)
                if self.docs.pop(vid, None) is not None:
                    out.deleted.append(vid)  # after out.new: the branches add, then remove
            elif vid in self.docs:
                self.docs[vid] = replace(self.docs[vid], **fields)
                out.edited.append(self.docs[vid])
        return out

    def visible(self, video_id: int, caller: Caller) -> VideoDoc | None:
        """The video's doc if ``caller`` may see it (``mlsd.state.access``: blocked and
        unavailable videos are hidden like private ones); None otherwise (404)."""
        d = self.docs.get(video_id)
        if d is None or not may_see(caller, d.owner, d.private, not d.available or d.blocked):
            return None
        return d

    def thumbnail(self, video_id: int) -> bytes | None:
        """A live video's stored thumbnail (JPEG); catalogue videos: None (read from uri)."""
        return self.log.thumbnail(video_id) if self.log is not None else None

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        self.feat, self.prob = [np.concatenate(self.feat)], [np.concatenate(self.prob)]
        return np.array(self.ids, np.int64), self.feat[0], self.prob[0]
