"""Shadow deployment, the comparison half: how a shadow model's answers compare to primary's.

The mirroring half (fire-and-forget copies of requests) lives in ``deployments/shadow.py``;
this module only aggregates records, so any app can plug its own comparison in.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np


def overlap_at_k(primary: Sequence, shadow: Sequence, k: int = 10) -> float:
    """|top-k(primary) ∩ top-k(shadow)| / min(k, |top-k(primary)|) (1.0 when both are empty)."""
    a, b = list(primary)[:k], list(shadow)[:k]
    if not a:
        return 1.0 if not b else 0.0
    return len(set(a) & set(b)) / len(a)


def label_agreement(primary: Any, shadow: Any, k: int = 0) -> float:
    return float(primary == shadow)


def box_agreement(primary: Sequence, shadow: Sequence, k: float = 0.5) -> dict[str, float]:
    """Detections as (label, x1, y1, x2, y2) rows, matched greedily at IoU >= ``k`` within a
    label: ``score`` = F1 of the match, ``primary_only`` = boxes the shadow would have left
    unblurred, ``shadow_only`` = boxes the primary leaves unblurred that the shadow finds."""
    a = np.asarray(primary, np.float64).reshape(-1, 5)
    b = np.asarray(shadow, np.float64).reshape(-1, 5)
    if len(a) == 0 and len(b) == 0:
        return {"score": 1.0, "primary_only": 0.0, "shadow_only": 0.0}
    matched = 0
    used = np.zeros(len(b), bool)
    for row in a:
        same = (b[:, 0] == row[0]) & ~used
        if not same.any():
            continue
        x1 = np.maximum(row[1], b[:, 1])
        y1 = np.maximum(row[2], b[:, 2])
        x2 = np.minimum(row[3], b[:, 3])
        y2 = np.minimum(row[4], b[:, 4])
        inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
        area = lambda r: (r[..., 3] - r[..., 1]) * (r[..., 4] - r[..., 2])  # noqa: E731
        iou = np.where(same, inter / np.maximum(area(row) + area(b) - inter, 1e-9), -1)
        j = int(np.argmax(iou))
        if iou[j] >= k:
            used[j] = True
            matched += 1
    f1 = 2 * matched / (len(a) + len(b))
    return {
        "score": f1,
        "primary_only": float(len(a) - matched),
        "shadow_only": float(len(b) - matched),
    }


def head_agreement(primary: dict, shadow: dict, k: float = 0) -> dict[str, float]:
    """Two moderation decisions ``{"action": str, "flagged": [heads]}``: ``score`` = 1 when the
    actions agree; per head, ``disagree/<head>`` counts posts one model flags on that head
    and the other does not (the report's per-head agreement is 1 - that / completed)."""
    a, b = set(primary.get("flagged", ())), set(shadow.get("flagged", ()))
    out = {"score": float(primary.get("action") == shadow.get("action"))}
    for h in sorted(set(primary.get("heads", ())) | a | b):
        out[f"disagree/{h}"] = float((h in a) != (h in b))
    return out


COMPARISONS: dict[str, Callable[..., float | dict[str, float]]] = {
    "overlap@k": overlap_at_k,
    "agreement": label_agreement,
    "box_f1": box_agreement,
    "head_agreement": head_agreement,
}


class ShadowStats:
    """Thread-safe running aggregates of primary-vs-shadow records (bounded memory)."""

    def __init__(self, comparison: str = "overlap@k", k: int = 10, window: int = 10_000):
        if comparison not in COMPARISONS:
            raise ValueError(f"unknown comparison {comparison!r}; known: {sorted(COMPARISONS)}")
        self.comparison, self.k = comparison, k
        self._compare = COMPARISONS[comparison]
        self._lock = threading.Lock()
        self.mirrored = self.completed = self.errors = self.timeouts = 0
        self.last_error: str | None = None
        self._scores: deque[float] = deque(maxlen=window)
        self.totals: dict[str, float] = {}  # extra counts a comparison returns, summed
        self._primary_ms: deque[float] = deque(maxlen=window)
        self._shadow_ms: deque[float] = deque(maxlen=window)

    def record(
        self,
        primary: Any,
        shadow: Any = None,
        primary_ms: float | None = None,
        shadow_ms: float | None = None,
        error: str | None = None,
        timed_out: bool = False,
    ) -> None:
        with self._lock:
            self.mirrored += 1
            if timed_out:
                self.timeouts += 1
            elif error is not None:
                self.errors += 1
                self.last_error = error[:500]
            else:
                self.completed += 1
                out = self._compare(primary, shadow, self.k)
                if isinstance(out, dict):
                    for key, v in out.items():
                        if key != "score":
                            self.totals[key] = self.totals.get(key, 0.0) + v
                    out = out["score"]
                self._scores.append(out)
                if shadow_ms is not None:
                    self._shadow_ms.append(shadow_ms)
            if primary_ms is not None:
                self._primary_ms.append(primary_ms)

    @staticmethod
    def _pct(values: deque, q: float) -> float | None:
        return float(np.percentile(np.fromiter(values, float), q)) if values else None

    def mean_score(self) -> float | None:
        """The running mean agreement (cheap: no latency percentiles)."""
        with self._lock:
            return float(np.mean(self._scores)) if self._scores else None

    def report(self) -> dict[str, Any]:
        with self._lock:
            p50, s50 = self._pct(self._primary_ms, 50), self._pct(self._shadow_ms, 50)
            return {
                "comparison": self.comparison,
                "k": self.k,
                "mirrored": self.mirrored,
                "completed": self.completed,
                "errors": self.errors,
                "timeouts": self.timeouts,
                "last_error": self.last_error,
                "mean_score": float(np.mean(self._scores)) if self._scores else None,
                "min_score": float(np.min(self._scores)) if self._scores else None,
                "primary_latency_ms": {"p50": p50, "p99": self._pct(self._primary_ms, 99)},
                "shadow_latency_ms": {"p50": s50, "p99": self._pct(self._shadow_ms, 99)},
                "latency_ratio_p50": (s50 / p50) if (p50 and s50) else None,
                **({"totals": dict(self.totals)} if self.totals else {}),
            }
