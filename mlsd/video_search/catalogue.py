"""The video catalogue of video search: indexed videos (from an artifact) plus a durable log of
videos added while serving.

Each video keeps its time-pooled frame features and class probabilities (model-independent),
so every text-video model version, primary or shadow, projects the same catalogue into its
own space; and its text (title, description, tags) for the inverted index. Additions are
committed to an SQLite log (WAL, synchronous=FULL) before they are acknowledged; every replica
replays the log on start and before each search, so an acknowledged video survives restarts
and is seen by all replicas. The next indexing job folds the log into a new artifact version.
"""

from __future__ import annotations

import functools
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from mlsd.artifacts import Artifact, ArtifactError, ArtifactStore
from mlsd.durable import DurableLog


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


@functools.lru_cache(maxsize=4)
def _planes(bits: int, dim: int) -> np.ndarray:
    return np.random.default_rng(7).standard_normal((bits, dim)).astype(np.float32)


def signature(feat: np.ndarray, bits: int = 64) -> list[int]:
    """Random-hyperplane hash of the pooled features: near-duplicate videos share most bits."""
    return (_planes(bits, len(feat)) @ np.asarray(feat, np.float32) > 0).astype(int).tolist()


def write_catalogue(
    store: ArtifactStore, name: str, videos: list[dict], meta: dict, sample: dict
) -> str:
    """videos: rows with path, feat (1280,), prob (1000,); meta: file name -> doc fields."""
    writer = store.new_version(name)
    docs = []
    for i, v in enumerate(videos, start=1):
        m = meta.get(Path(v["path"]).name, {})
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
    return writer.commit(config={"sample": sample}, data={"videos": len(docs)})


class VideoLog(DurableLog):
    """Append-only, multi-process-safe log of videos added at serving time."""

    def __init__(self, path: str | Path):
        super().__init__(
            path,
            """CREATE TABLE IF NOT EXISTS videos (
                 seq INTEGER PRIMARY KEY AUTOINCREMENT, doc TEXT NOT NULL,
                 feat BLOB NOT NULL, prob BLOB NOT NULL,
                 created REAL DEFAULT ((julianday('now') - 2440587.5) * 86400.0))""",
        )

    def append(self, doc: VideoDoc, feat: np.ndarray, prob: np.ndarray) -> int:
        """Commit one video; returns its public id (see ``DurableLog.live_id``)."""
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
            self._conn.commit()
            return doc.video_id

    def since(self, seq: int) -> list[tuple[int, VideoDoc, np.ndarray, np.ndarray]]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT seq, doc, feat, prob FROM videos WHERE seq > ? ORDER BY seq", (seq,)
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


class VideoCatalogue:
    """Artifact videos + replayed live additions: docs, pooled features, class probabilities."""

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
        self.seq = 0

    def refresh(self) -> list[VideoDoc]:
        """Replay log entries not seen yet; returns the new docs."""
        if self.log is None:
            return []
        new = self.log.since(self.seq)
        for seq, doc, f, p in new:
            self.docs[doc.video_id] = doc
            self.ids.append(doc.video_id)
            self.feat.append(f[None])
            self.prob.append(p[None])
            self.seq = seq
        return [d for _, d, _, _ in new]

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        self.feat, self.prob = [np.concatenate(self.feat)], [np.concatenate(self.prob)]
        return np.array(self.ids, np.int64), self.feat[0], self.prob[0]
