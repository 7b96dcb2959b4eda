"""The video catalogue of video search: indexed videos (from an artifact) plus a durable log of
videos added while serving.

Each video keeps its time-pooled frame features and class probabilities (model-independent),
so every text-video model version, primary or shadow, projects the same catalogue into its
own space; and its text (title, description, tags) for the inverted index. Additions are
committed to an SQLite log (WAL, synchronous=FULL) before they are acknowledged; every replica
replays the log on start and before each search, so an acknowledged video survives restarts
and is seen by all replicas. The next indexing job folds the log into a new artifact version.

Edits (title, description, tags) and deletions are rows of the same log (table ``changes``),
committed before they are acknowledged; a deletion erases a live video's features, text and
thumbnail in the same transaction. Replicas read the changes before the additions, so a deleted
video is never indexed again. The catalogue job applies the changes by URI (a catalogue video's
id is its position in a build) and records the last change it folded, which replicas skip.
"""

from __future__ import annotations

import functools
import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from mlsd.artifacts import Artifact, ArtifactError, ArtifactStore
from mlsd.durable import LIVE_ID_BASE, DurableLog

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
    if live_log and Path(live_log).exists():
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


class VideoLog(DurableLog):
    """Append-only, multi-process-safe log of videos added at serving time."""

    def __init__(self, path: str | Path):
        super().__init__(
            path,
            """CREATE TABLE IF NOT EXISTS videos (
                 seq INTEGER PRIMARY KEY AUTOINCREMENT, doc TEXT NOT NULL,
                 feat BLOB NOT NULL, prob BLOB NOT NULL,
                 created REAL DEFAULT ((julianday('now') - 2440587.5) * 86400.0))""",
            """CREATE TABLE IF NOT EXISTS changes (
                 seq INTEGER PRIMARY KEY AUTOINCREMENT, video_id INTEGER NOT NULL,
                 kind TEXT NOT NULL, fields TEXT, uri TEXT, changed_by TEXT,
                 created REAL DEFAULT ((julianday('now') - 2440587.5) * 86400.0))""",
            "CREATE INDEX IF NOT EXISTS changes_video ON changes (video_id, kind)",
            "CREATE TABLE IF NOT EXISTS thumbs (seq INTEGER PRIMARY KEY, jpeg BLOB NOT NULL)",
        )

    def append(
        self, doc: VideoDoc, feat: np.ndarray, prob: np.ndarray, thumb: bytes | None = None
    ) -> int:
        """Commit one video (and its thumbnail); returns its public id (``live_id``)."""
        with self._lock:
            cur = self._conn.execute(
                "INSERT INTO videos (doc, feat, prob) VALUES ('{}', ?, ?)",
                (np.asarray(feat, np.float32).tobytes(), np.asarray(prob, np.float32).tobytes()),
            )
            seq = int(cur.lastrowid)
            doc.video_id = self.live_id(seq)
            self._conn.execute(
                "UPDATE videos SET doc = ? WHERE seq = ?", (json.dumps(asdict(doc)), seq)
            )
            if thumb:
                self._conn.execute("INSERT INTO thumbs VALUES (?, ?)", (seq, thumb))
            self._conn.commit()
            return doc.video_id

    def delete(self, video_id: int, uri: str = "", by: str | None = None) -> bool:
        """Tombstone a video and erase a live one's features, text and thumbnail, in one
        transaction; -> False if it was deleted already."""
        seq = self.seq_of(video_id)
        with self._lock:
            # an upload's id is for ever; a catalogue id names another video after a rebuild
            # (the caller checks that its catalogue still has it)
            done = (
                seq is not None
                and self._conn.execute(
                    "SELECT 1 FROM changes WHERE video_id = ? AND kind = 'delete'", (video_id,)
                ).fetchone()
            )
            if done:
                return False
            self._conn.execute(
                "INSERT INTO changes (video_id, kind, uri, changed_by) VALUES (?, 'delete', ?, ?)",
                (video_id, uri, by),
            )
            if seq is not None:
                self._conn.execute(
                    "UPDATE videos SET doc = '{}', feat = x'', prob = x'' WHERE seq = ?", (seq,)
                )
                self._conn.execute("DELETE FROM thumbs WHERE seq = ?", (seq,))
            self._conn.commit()
            return True

    def edit(self, video_id: int, fields: dict, uri: str = "", by: str | None = None) -> int:
        """Commit new text fields for a video; -> the change's sequence number."""
        bad = set(fields) - set(EDITABLE)
        if bad:
            raise ValueError(f"only {EDITABLE} can be edited, not {sorted(bad)}")
        with self._lock:
            cur = self._conn.execute(
                "INSERT INTO changes (video_id, kind, fields, uri, changed_by)"
                " VALUES (?, 'edit', ?, ?, ?)",
                (video_id, json.dumps(fields), uri, by),
            )
            self._conn.commit()
            return int(cur.lastrowid)

    def changes_since(self, seq: int) -> list[tuple[int, int, str, dict, str]]:
        """(seq, video_id, kind, fields, uri) after ``seq``, in order."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT seq, video_id, kind, fields, uri FROM changes WHERE seq > ? ORDER BY seq",
                (seq,),
            ).fetchall()
        return [(int(s), int(v), k, json.loads(f) if f else {}, u or "") for s, v, k, f, u in rows]

    def thumbnail(self, video_id: int) -> bytes | None:
        seq = self.seq_of(video_id)
        if seq is None:
            return None
        with self._lock:
            row = self._conn.execute("SELECT jpeg FROM thumbs WHERE seq = ?", (seq,)).fetchone()
        return None if row is None else row[0]

    def since(self, seq: int) -> list[tuple[int, VideoDoc, np.ndarray, np.ndarray]]:
        with self._lock:
            rows = self._conn.execute(  # an empty feat: erased by a deletion
                "SELECT seq, doc, feat, prob FROM videos WHERE seq > ? AND length(feat) > 0"
                " ORDER BY seq",
                (seq,),
            ).fetchall()
        return [
            (
                s,
                VideoDoc(**json.loads(d)),
                np.frombuffer(f, np.float32),
                np.frombuffer(p, np.float32),
            )
            for s, d, f, p in rows
        ]


@dataclass
class Refresh:
    """What one replay of the log changed."""

    new: list[VideoDoc] = field(default_factory=list)
    edited: list[VideoDoc] = field(default_factory=list)
    deleted: list[int] = field(default_factory=list)


class VideoCatalogue:
    """Artifact videos + replayed live additions, edits and deletions: docs, pooled features,
    class probabilities."""

    def __init__(self, art: Artifact, live_log: str | None = None):
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
        self.log = VideoLog(live_log) if live_log else None
        self.folded = int(art.config.get("folded_changes", 0))  # taken in by the catalogue job
        self.seq = self.change_seq = 0
        self.deleted: set[int] = set()
        self.uris = {d.video_id: d.uri for d in docs}

    def refresh(self) -> Refresh:
        """Replay log entries not seen yet: additions, then edits and deletions (read first:
        a deletion erases its row in the same transaction, so it is never added)."""
        out = Refresh()
        if self.log is None:
            return out
        changes = self.log.changes_since(self.change_seq)
        for seq, doc, f, p in self.log.since(self.seq):
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

    def thumbnail(self, video_id: int) -> bytes | None:
        """A live video's stored thumbnail (JPEG); catalogue videos: None (read from uri)."""
        return self.log.thumbnail(video_id) if self.log is not None else None

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        self.feat, self.prob = [np.concatenate(self.feat)], [np.concatenate(self.prob)]
        return np.array(self.ids, np.int64), self.feat[0], self.prob[0]
