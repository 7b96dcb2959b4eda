"""Monitoring for data distribution shift, shared by every system (the book: "the most common
reason why an ML model fails").

Offline, a training job sketches what its model was trained and validated on into a
:class:`DriftReference` stored in the artifact: per scalar **feature** (an input property) and
per **score** (a model output) a histogram over reference quantile bins, the quantiles
themselves and a bounded sample; per **embedding** space a PCA projection fitted on the
reference, its moments and a bounded projected sample.

Online, a :class:`DriftMonitor` keeps a rolling window of what was served (bounded memory) and
compares it with the reference: per scalar stream the population stability index (PSI, an
effect size) and the two-sample Kolmogorov-Smirnov test (``scipy.stats.ks_2samp``); per
embedding space the maximum mean discrepancy (MMD, RBF kernel on the standardised PCA
projection) with a permutation p-value. A stream *moved* when its p-value is under the
window's false-alarm budget ``alpha`` split over the tests (Bonferroni) and, for scalars, its
PSI is at least ``psi`` as well: significance alone flags differences too small to matter
once windows are large. Every ``window`` observations a tumbling window is judged and kept
(``history`` of them); ``on_drift`` is called when one moved.
"""

from __future__ import annotations

import json
import math
import threading
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

REFERENCE_FILE = "drift_reference.json"
KINDS = ("features", "scores", "embeddings")


@dataclass
class ScalarSketch:
    """One scalar stream of the reference: bins, their shares, quantiles, a sample (for KS)."""

    edges: list[float]  # (B-1,) interior bin edges: reference quantiles, deduplicated
    shares: list[float]  # (B+2,) reference share per bin, with below-min and above-max bins
    quantiles: list[float]  # (21,) at 0, 0.05, ..., 1
    sample: list[float]  # (<= S,) uniform sample of the reference values
    mean: float
    std: float
    n: int

    def counts(self, values: np.ndarray) -> np.ndarray:
        return _bin_counts(np.asarray(self.edges), self.quantiles[0], self.quantiles[-1], values)

    @classmethod
    def fit(cls, values: np.ndarray, bins: int, sample: int, rng: np.random.Generator):
        v = np.asarray(values, np.float64).ravel()
        v = v[np.isfinite(v)]
        if len(v) < 2:
            raise ValueError(f"a reference stream needs at least 2 finite values, got {len(v)}")
        edges = np.unique(np.quantile(v, np.linspace(0, 1, bins + 1)[1:-1]))
        quantiles = np.quantile(v, np.linspace(0, 1, 21))
        counts = _bin_counts(edges, quantiles[0], quantiles[-1], v)
        pick = rng.choice(len(v), min(sample, len(v)), replace=False)
        return cls(
            edges=edges.tolist(),
            shares=(counts / len(v)).tolist(),
            quantiles=quantiles.tolist(),
            sample=v[pick].tolist(),
            mean=float(v.mean()),
            std=float(v.std()),
            n=int(len(v)),
        )


def _bin_counts(edges: np.ndarray, low: float, high: float, v: np.ndarray) -> np.ndarray:
    """Counts over the quantile bins plus one bin below the reference's minimum and one above
    its maximum, so values the reference never saw count (a constant reference too)."""
    b = np.searchsorted(edges, v, "right") + 1
    b[v < low], b[v > high] = 0, len(edges) + 2
    return np.bincount(b, minlength=len(edges) + 3).astype(np.float64)


@dataclass
class EmbeddingSketch:
    """One embedding space of the reference: its PCA and the projected sample's moments."""

    mean: list[float]  # (D,)
    components: list[list[float]]  # (k, D) principal axes
    scale: list[float]  # (k,) reference std along each axis
    explained: list[float]  # (k,) share of variance each axis explains
    sample: list[list[float]]  # (<= S, k) standardised projections of a reference sample
    bandwidth: float  # RBF bandwidth: median pairwise distance of the sample
    n: int

    @classmethod
    def fit(cls, x: np.ndarray, k: int, sample: int, rng: np.random.Generator):
        x = np.asarray(x, np.float64)
        if x.ndim != 2 or len(x) < 3:
            raise ValueError(f"a reference embedding needs (N>=3, D) values, got {x.shape}")
        mean = x.mean(0)
        _, s, vt = np.linalg.svd(x - mean, full_matrices=False)
        k = min(k, vt.shape[0])
        var = s**2 / max(len(x) - 1, 1)
        comps, scale = vt[:k], np.sqrt(np.maximum(var[:k], 1e-12))
        pick = rng.choice(len(x), min(sample, len(x)), replace=False)
        z = (x[pick] - mean) @ comps.T / scale  # (S, k)
        return cls(
            mean=mean.tolist(),
            components=comps.tolist(),
            scale=scale.tolist(),
            explained=(var[:k] / max(var.sum(), 1e-12)).tolist(),
            sample=z.tolist(),
            bandwidth=_median_distance(z, rng),
            n=int(len(x)),
        )

    def project(self, x: np.ndarray) -> np.ndarray:
        """(n, D) -> (n, k) standardised projections."""
        x = np.asarray(x, np.float64).reshape(-1, len(self.mean))
        return (x - np.asarray(self.mean)) @ np.asarray(self.components).T / np.asarray(self.scale)


def _median_distance(z: np.ndarray, rng: np.random.Generator, n: int = 500) -> float:
    z = z[rng.choice(len(z), min(n, len(z)), replace=False)]
    d = np.sqrt(np.maximum(_sq_dists(z, z), 0))
    med = float(np.median(d[np.triu_indices(len(z), 1)]))
    return med if med > 0 else 1.0


def _sq_dists(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T


@dataclass
class DriftReference:
    """What a model was trained on, sketched; JSON in its artifact (``drift_reference.json``)."""

    features: dict[str, ScalarSketch] = field(default_factory=dict)
    scores: dict[str, ScalarSketch] = field(default_factory=dict)
    embeddings: dict[str, EmbeddingSketch] = field(default_factory=dict)
    source: str = ""  # what the reference was computed on, in words

    def streams(self) -> dict[str, tuple[str, Any]]:
        """``name -> (kind, sketch)``; names are unique across kinds."""
        out: dict[str, tuple[str, Any]] = {}
        for kind in KINDS:
            for name, sk in getattr(self, kind).items():
                if name in out:
                    raise ValueError(f"stream {name!r} appears as {out[name][0]} and {kind}")
                out[name] = (kind, sk)
        return out

    def summary(self) -> dict:
        return {
            "source": self.source,
            **{kind: {n: sk.n for n, sk in getattr(self, kind).items()} for kind in KINDS},
        }

    def save(self, path: str | Path) -> Path:
        body = {
            "source": self.source,
            **{k: {n: asdict(s) for n, s in getattr(self, k).items()} for k in KINDS},
        }
        Path(path).write_text(json.dumps(body))
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> DriftReference:
        body = json.loads(Path(path).read_text())
        return cls(
            features={n: ScalarSketch(**s) for n, s in body.get("features", {}).items()},
            scores={n: ScalarSketch(**s) for n, s in body.get("scores", {}).items()},
            embeddings={n: EmbeddingSketch(**s) for n, s in body.get("embeddings", {}).items()},
            source=body.get("source", ""),
        )


def load_reference(art: Any) -> DriftReference | None:
    """An artifact's reference (``mlsd.artifacts.Artifact``); None for a version built before
    drift monitoring, so such a model still serves (its ``/drift`` says why it is off)."""
    if REFERENCE_FILE not in art.manifest.get("files", {}):
        return None
    return DriftReference.load(art.file(REFERENCE_FILE))


def build_reference(
    features: Mapping[str, np.ndarray] | None = None,
    scores: Mapping[str, np.ndarray] | None = None,
    embeddings: Mapping[str, np.ndarray] | None = None,
    source: str = "",
    bins: int = 10,
    sample: int = 2000,
    components: int = 8,
    embedding_sample: int = 1000,
    seed: int = 0,
) -> DriftReference:
    """Sketch reference data: scalar arrays per feature and score, (N, D) per embedding."""
    rng = np.random.default_rng(seed)
    ref = DriftReference(
        features={n: ScalarSketch.fit(v, bins, sample, rng) for n, v in (features or {}).items()},
        scores={n: ScalarSketch.fit(v, bins, sample, rng) for n, v in (scores or {}).items()},
        embeddings={
            n: EmbeddingSketch.fit(v, components, embedding_sample, rng)
            for n, v in (embeddings or {}).items()
        },
        source=source,
    )
    ref.streams()  # names unique
    return ref


def psi(shares: np.ndarray, live_counts: np.ndarray, eps: float = 1e-4) -> float:
    """Population stability index: sum (live - ref) * ln(live / ref) over bins."""
    p = np.maximum(np.asarray(shares, np.float64), eps)
    q = np.maximum(live_counts / max(live_counts.sum(), 1), eps)
    return float(((q - p) * np.log(q / p)).sum())


def mmd_permutation(
    a: np.ndarray, b: np.ndarray, bandwidth: float, permutations: int, rng: np.random.Generator
) -> tuple[float, float]:
    """Biased MMD^2 of samples ``a`` (n, k) and ``b`` (m, k) under an RBF kernel, and its
    permutation p-value (``(1 + #perm >= observed) / (1 + permutations)``)."""
    pooled = np.concatenate([a, b])
    kern = np.exp(-np.maximum(_sq_dists(pooled, pooled), 0) / (2 * bandwidth**2))  # (N, N)
    n, total = len(a), len(pooled)
    labels = np.zeros((permutations + 1, total), bool)
    labels[0, :n] = True
    for i in range(1, permutations + 1):
        labels[i, rng.choice(total, n, replace=False)] = True
    w = labels / n - ~labels / (total - n)  # (P+1, N): +1/n for "a", -1/m for "b"
    stats = np.einsum("pi,pi->p", w @ kern, w)  # w^T K w per permutation
    return float(stats[0]), float((1 + (stats[1:] >= stats[0] - 1e-12).sum()) / (1 + permutations))


@dataclass
class DriftThresholds:
    """When a window counts as moved (serve_config ``drift:`` maps onto these)."""

    window: int = 500  # observations per window (the rolling window's length, too)
    min_window: int = 50  # a stream with fewer values in the window is not tested
    alpha: float = 0.01  # false-alarm budget per window, split over its tests (Bonferroni)
    psi: float = 0.2  # a scalar stream moved only if its PSI is at least this as well
    permutations: int = 0  # MMD permutations; 0: enough for alpha / tests to be reachable
    mmd_sample: int = 300  # live and reference points per MMD test (bounded cost)
    history: int = 24  # judged windows kept

    def __post_init__(self):
        if self.window < 2 or not 2 <= self.min_window <= self.window:
            raise ValueError(f"need 2 <= min_window <= window, got {self}")
        if not 0 < self.alpha < 1 or self.psi < 0 or self.permutations < 0:
            raise ValueError(f"invalid drift thresholds {self}")


def compare(
    ref: DriftReference,
    live: Mapping[str, np.ndarray],
    thresholds: DriftThresholds,
    rng: np.random.Generator,
) -> dict:
    """Test every stream of ``live`` (scalars (n,), embeddings (n, D)) against the reference:
    per stream its statistics, p-value and whether it moved; ``drifted`` if any moved."""
    from scipy.stats import ks_2samp

    streams = ref.streams()
    tested = {n: v for n, v in live.items() if n in streams and len(v) >= thresholds.min_window}
    m = max(len(tested), 1)
    level = thresholds.alpha / m
    perms = thresholds.permutations or max(200, math.ceil(2 / level))
    out: dict[str, dict] = {}
    for name, values in tested.items():
        kind, sk = streams[name]
        if kind == "embeddings":
            z = sk.project(values)
            z = z[rng.choice(len(z), min(thresholds.mmd_sample, len(z)), replace=False)]
            zr = np.asarray(sk.sample)
            zr = zr[rng.choice(len(zr), min(thresholds.mmd_sample, len(zr)), replace=False)]
            mmd2, p = mmd_permutation(z, zr, sk.bandwidth, perms, rng)
            out[name] = {
                "kind": kind,
                "n": len(values),
                "mmd2": mmd2,
                "p_value": p,
                "mean_shift": float(np.linalg.norm(z.mean(0))),  # in reference stds
                "variance_ratio": np.var(z, 0).round(4).tolist(),  # per PCA axis, ref = 1
                "moved": p < level,
            }
        else:
            v = np.asarray(values, np.float64)
            v = v[np.isfinite(v)]
            index = psi(np.asarray(sk.shares), sk.counts(v))
            ks = ks_2samp(v, np.asarray(sk.sample))
            out[name] = {
                "kind": kind,
                "n": int(len(v)),
                "psi": index,
                "ks": float(ks.statistic),
                "p_value": float(ks.pvalue),
                "mean": float(v.mean()) if len(v) else None,
                "reference_mean": sk.mean,
                "moved": bool(ks.pvalue < level and index >= thresholds.psi),
            }
    moved = sorted(n for n, r in out.items() if r["moved"])
    return {
        "drifted": bool(moved),
        "moved": moved,
        "tests": len(tested),
        "level": level,
        "streams": out,
        "untested": sorted(set(streams) - set(tested)),
    }


class DriftMonitor:
    """Rolling windows of served observations against a reference (thread-safe; bounded:
    ``window`` values per stream and ``history`` judged windows)."""

    def __init__(
        self,
        reference: DriftReference | None,
        thresholds: DriftThresholds | None = None,
        seed: int = 0,
        on_drift: Callable[[dict], None] | None = None,
    ):
        self.reference, self.t = reference, thresholds or DriftThresholds()
        self.on_drift = on_drift
        self._rng = np.random.default_rng(seed)
        self._lock = threading.Lock()
        names = reference.streams() if reference is not None else {}
        self._kinds = {n: kind for n, (kind, _) in names.items()}
        self._live: dict[str, deque] = {n: deque(maxlen=self.t.window) for n in names}
        self.observed = self.ignored = 0
        self.windows: deque[dict] = deque(maxlen=self.t.history)
        self.drifted_windows = 0

    def observe(self, **values: Any) -> dict | None:
        """Record one observation: ``name=value`` per stream (a scalar or several values for
        a scalar stream; a (D,) or (n, D) array for an embedding). Streams the reference
        lacks are counted and dropped. Returns the judged window when this one closed it."""
        if self.reference is None:
            return None
        with self._lock:
            self.observed += 1
            for name, value in values.items():
                if value is None:
                    continue
                if name not in self._live:
                    self.ignored += 1
                    continue
                if self._kinds[name] == "embeddings":
                    self._live[name].extend(
                        np.asarray(value, np.float32).reshape(
                            -1, len(self.reference.embeddings[name].mean)
                        )
                    )
                else:
                    self._live[name].extend(np.atleast_1d(np.asarray(value, np.float64)).ravel())
            if self.observed % self.t.window:
                return None
            snapshot = self._snapshot()
            start = self.observed - self.t.window
        judged = {
            "window": [start, self.observed],
            **compare(self.reference, snapshot, self.t, self._rng),
        }
        with self._lock:
            self.windows.append(judged)
            self.drifted_windows += judged["drifted"]
        if judged["drifted"] and self.on_drift is not None:
            self.on_drift(judged)
        return judged

    def _snapshot(self) -> dict[str, np.ndarray]:
        return {n: np.asarray(list(d)) for n, d in self._live.items() if d}

    def report(self, windows: int | None = None) -> dict:
        """The rolling window now, the judged windows (newest last), thresholds, reference."""
        if self.reference is None:
            return {"enabled": False, "reason": "the artifact has no drift reference"}
        with self._lock:
            snapshot, observed = self._snapshot(), self.observed
            history = list(self.windows)[-windows:] if windows else list(self.windows)
        rolling = compare(self.reference, snapshot, self.t, self._rng)
        return {
            "enabled": True,
            "observed": observed,
            "ignored_values": self.ignored,
            "thresholds": asdict(self.t),
            "reference": self.reference.summary(),
            "rolling": {"window": [max(observed - self.t.window, 0), observed], **rolling},
            "windows_judged": observed // self.t.window,
            "windows_drifted": self.drifted_windows,
            "windows": history,
        }


def false_alarm_rate(
    ref: DriftReference,
    windows: list[Mapping[str, np.ndarray]],
    thresholds: DriftThresholds,
    seed: int = 0,
) -> float:
    """Share of ``windows`` (in-distribution data, one mapping of streams each) judged drifted."""
    rng = np.random.default_rng(seed)
    return float(np.mean([compare(ref, w, thresholds, rng)["drifted"] for w in windows]))
