"""The one durable-log pattern every app uses for what it acknowledges while serving (live
images, feedback events, uploaded videos): an SQLite file in WAL mode with synchronous=FULL,
so a committed row survives a crash, readable by every replica process at once."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

# Ids of items added while serving are LIVE_ID_BASE + the log's sequence number, so they never
# collide with the ids an artifact's catalogue uses (all below it).
LIVE_ID_BASE = 1_000_000_000_000


class DurableLog:
    """Opens (creating if needed) the log and its tables; subclasses add the rows' shape."""

    def __init__(self, path: str | Path, *schema: str):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(str(self.path), timeout=30, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        for statement in schema:
            self._conn.execute(statement)
        self._conn.commit()

    def close(self) -> None:
        with self._lock:
            self._conn.close()
