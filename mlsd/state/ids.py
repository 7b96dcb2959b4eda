"""Public ids of items added while serving: LIVE_ID_BASE + a keyed permutation of the log's
sequence number. Above every id an artifact's catalogue uses, unique, and not guessable from
one another (ids that count up tell a caller how many items exist and which ids to try)."""

from __future__ import annotations

import hashlib
import hmac

LIVE_ID_BASE = 1_000_000_000_000
ID_BITS = 48  # LIVE_ID_BASE + 2**48 < 2**53: ids stay exact in JSON / JavaScript


class IdPermutation:
    """A 4-round Feistel permutation of [0, 2**48) keyed by a secret: seq <-> public id.
    An empty key is the identity (a log written before ids were permuted keeps its ids)."""

    HALF = ID_BITS // 2
    MASK = (1 << HALF) - 1

    def __init__(self, key: bytes):
        self.key = key

    def _f(self, r: int, x: int) -> int:
        mac = hmac.new(self.key, bytes([r]) + x.to_bytes(4, "big"), hashlib.sha256).digest()
        return int.from_bytes(mac[:4], "big") & self.MASK

    def forward(self, n: int) -> int:
        if not self.key:
            return n
        left, right = n >> self.HALF, n & self.MASK
        for r in range(4):
            left, right = right, left ^ self._f(r, right)
        return (left << self.HALF) | right

    def inverse(self, n: int) -> int:
        if not self.key:
            return n
        left, right = n >> self.HALF, n & self.MASK
        for r in reversed(range(4)):
            left, right = right ^ self._f(r, left), left
        return (left << self.HALF) | right

    def live_id(self, seq: int) -> int:
        """The public id of the row with this sequence number."""
        return LIVE_ID_BASE + self.forward(seq)

    def seq_of(self, live_id: int) -> int | None:
        """The sequence number behind a public id (None if it cannot be one of ours)."""
        n = int(live_id) - LIVE_ID_BASE
        if not 0 <= n < 1 << ID_BITS:
            return None
        return self.inverse(n)
