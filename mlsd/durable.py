"""The one durable-log pattern every app uses for what it acknowledges while serving (live
images, feedback events, uploaded videos): an SQLite file in WAL mode with synchronous=FULL,
so a committed row survives a crash, readable by every replica process at once."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import sqlite3
import threading
from pathlib import Path

# Ids of items added while serving are LIVE_ID_BASE + a keyed permutation of the log's sequence
# number: above every id an artifact's catalogue uses, unique, and not guessable from one
# another (ids that count up tell a caller how many items exist and which ids to try).
LIVE_ID_BASE = 1_000_000_000_000
ID_BITS = 48  # LIVE_ID_BASE + 2**48 < 2**53: ids stay exact in JSON / JavaScript


class IdPermutation:
    """A 4-round Feistel permutation of [0, 2**48) keyed by a secret: seq <-> public id."""

    HALF = ID_BITS // 2
    MASK = (1 << HALF) - 1

    def __init__(self, key: bytes):
        self.key = key

    def _f(self, r: int, x: int) -> int:
        mac = hmac.new(self.key, bytes([r]) + x.to_bytes(4, "big"), hashlib.sha256).digest()
        return int.from_bytes(mac[:4], "big") & self.MASK

    def forward(self, n: int) -> int:
        left, right = n >> self.HALF, n & self.MASK
        for r in range(4):
            left, right = right, left ^ self._f(r, right)
        return (left << self.HALF) | right

    def inverse(self, n: int) -> int:
        left, right = n >> self.HALF, n & self.MASK
        for r in reversed(range(4)):
            left, right = right ^ self._f(r, left), left
        return (left << self.HALF) | right


class DurableLog:
    """Opens (creating if needed) the log and its tables; subclasses add the rows' shape."""

    def __init__(self, path: str | Path, *schema: str):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(str(self.path), timeout=30, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        legacy = (
            self._conn.execute(
                "SELECT 1 FROM sqlite_master WHERE name = 'sqlite_sequence'"
            ).fetchone()
            is not None
            and not self._has_meta()
        )
        self._conn.execute("CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v BLOB)")
        for statement in schema:
            self._conn.execute(statement)
        # a log written before ids were permuted keeps its sequential ids (they were handed out)
        self._conn.execute(
            "INSERT OR IGNORE INTO meta VALUES ('id_key', ?)",
            (b"" if legacy else secrets.token_bytes(32),),
        )
        self._conn.commit()
        key = self._conn.execute("SELECT v FROM meta WHERE k = 'id_key'").fetchone()[0]
        self._ids = IdPermutation(key) if key else None

    def _has_meta(self) -> bool:
        q = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'"
        return self._conn.execute(q).fetchone() is not None

    def live_id(self, seq: int) -> int:
        """The public id of the row with this sequence number."""
        return LIVE_ID_BASE + (self._ids.forward(seq) if self._ids else seq)

    def seq_of(self, live_id: int) -> int | None:
        """The sequence number behind a public id (None if it cannot be one of ours)."""
        n = live_id - LIVE_ID_BASE
        if not 0 <= n < 1 << ID_BITS:
            return None
        return self._ids.inverse(n) if self._ids else n

    def check(self) -> None:
        """Raise if the log cannot be read or its file is gone (a lost volume): what a
        serving replica's health check asks before it takes traffic."""
        if not self.path.exists():
            raise OSError(f"durable log {self.path} is gone")
        with self._lock:
            self._conn.execute("SELECT 1 FROM meta LIMIT 1").fetchone()

    def close(self) -> None:
        with self._lock:
            self._conn.close()
