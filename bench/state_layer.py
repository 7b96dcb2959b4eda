"""The state layer's cost, side by side with the code it replaced.

    python -m bench.state_layer [--appends 2000] [--rows 10000,100000]

Three backends in the same run, on the visual-search live log (the busiest one: every search
replays it):

- ``sqlite3 (before)``: the direct-sqlite3 log this project had before ``mlsd.state`` (its
  source read from git at ``ANCHOR_COMMIT``, so the anchor is exactly that code);
- ``state: SQLite``: the embedded default (``make serve``);
- ``state: PostgreSQL``: a real server on a unix socket, started here with ``fsync=on``
  (Debian's PostgreSQL; what a cluster uses, minus the network).

Measured, one writer, a 128-d float32 embedding per row (the bytes of uploads go to the object
store in the new layer, to a BLOB in the old: ``append + 4 KB upload`` shows that path):

- append throughput (rows/s; each append is one durable commit: fsync);
- replay throughput (rows/s): ``since(0)`` over the whole log, what a replica does on start;
- replay cost per search at N live rows (us): what a replica does before every search, with
  nothing new (median), with one new row (median), and over a stream where one search in four
  follows an addition (mean; the soak's mix has fewer additions than that).

Ratios are against ``sqlite3 (before)``; the embedded path must stay within 10 % of it.
"""

from __future__ import annotations

import argparse
import importlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from sqlalchemy import insert

from mlsd.state import ObjectStore, init_store
from mlsd.state.schema import vs_images
from mlsd.visual_search.catalogue import CatalogueLog
from tests.servers import PostgresServer

ROOT = Path(__file__).resolve().parents[1]
ANCHOR_COMMIT = "8e4a4b0"  # the last commit with mlsd/durable.py (direct sqlite3)
DIM = 128


def anchor_module(folder: Path):
    """The old ``CatalogueLog`` (mlsd/durable.py + mlsd/visual_search/catalogue.py at
    ANCHOR_COMMIT) as a module, without putting a second copy of it in the tree."""

    def show(path: str) -> str:
        return subprocess.run(
            ["git", "show", f"{ANCHOR_COMMIT}:{path}"],
            cwd=ROOT,
            check=True,
            capture_output=True,
            text=True,
        ).stdout

    (folder / "durable_before.py").write_text(show("mlsd/durable.py"))
    src = show("mlsd/visual_search/catalogue.py").replace(
        "from mlsd.durable import", "from durable_before import"
    )
    (folder / "catalogue_before.py").write_text(src)
    sys.path.insert(0, str(folder))
    return importlib.import_module("catalogue_before")


class Before:
    """The anchor's log and its replica-side sync (deletions, then additions)."""

    name = "sqlite3 (before)"

    def __init__(self, mod, folder: Path):
        self.path = folder / "before.sqlite"
        self.log = mod.CatalogueLog(self.path)
        self.other = lambda: mod.CatalogueLog(self.path).append  # another replica's appends

    def append(self, emb, image=None):
        return self.log.append(emb, "m", owner="a", image=image)

    def sync(self, del_seq: int, seq: int) -> tuple[int, int]:
        tombs, rows = self.log.deletions_since(del_seq), self.log.since(seq)
        return (tombs[-1][0] if tombs else del_seq), (rows[-1][0] if rows else seq)

    def since(self, seq: int):
        return self.log.since(seq)

    def fill(self, n: int, emb) -> None:
        row = ("a", 0, 0, emb.tobytes(), DIM, "m")
        with self.log._lock:  # the anchor's own connection: one transaction of n rows
            self.log._conn.executemany(
                "INSERT INTO images (owner, private, unsafe, embedding, dim, model_version)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                [row] * n,
            )
            self.log._conn.commit()


class Layer:
    """The state layer's log and the replica's sync (``CatalogueIndex.sync``: the store's
    version first, then one read of tombstones and additions)."""

    def __init__(self, name: str, url: str, objects: str):

        self.name, self.log = name, CatalogueLog(url, objects)
        self.seen: int | None = None
        self.other = lambda: CatalogueLog(url, objects).append  # another replica's appends

    def append(self, emb, image=None):
        return self.log.append(emb, "m", owner="a", image=image)

    def sync(self, del_seq: int, seq: int) -> tuple[int, int]:
        version = self.log.db.version()
        if version is not None and version == self.seen:
            return del_seq, seq
        tombs, rows = self.log.changes(del_seq, seq)
        self.seen = version
        return (tombs[-1][0] if tombs else del_seq), (rows[-1][0] if rows else seq)

    def since(self, seq: int):
        return self.log.since(seq)

    def fill(self, n: int, emb) -> None:

        row = {
            "owner": "a",
            "private": False,
            "unsafe": False,
            "embedding": emb.tobytes(),
            "dim": DIM,
            "model_version": "m",
            "created": time.time(),
        }
        with self.log.db.write("vs_images") as c:
            c.execute(insert(vs_images), [row] * n)
        if not self.log.db.is_sqlite:  # a bulk load, then its statistics (autovacuum would)
            with self.log.db.engine.connect() as c:
                c.exec_driver_sql("ANALYZE")
                c.commit()


def per_second(n: int, fn) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return n / (time.perf_counter() - t0)


def per_call_us(n: int, fn) -> float:
    """The median of 5 runs of ``n`` calls, in microseconds per call."""
    runs = []
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        runs.append((time.perf_counter() - t0) / n * 1e6)
    return statistics.median(runs)


def measure(backend, appends: int, rows: list[int], emb, image: bytes) -> dict:
    out = {"append_rows_s": per_second(appends, lambda: backend.append(emb))}
    out["append_4kb_upload_rows_s"] = per_second(
        max(appends // 4, 50), lambda: backend.append(emb, image)
    )
    have = appends + max(appends // 4, 50)
    for n in rows:
        backend.fill(n - have, emb)
        have = n
        t0 = time.perf_counter()
        replayed = backend.since(0)
        out[f"replay_rows_s@{n}"] = len(replayed) / (time.perf_counter() - t0)
        state = backend.sync(0, 0)  # a replica that has seen everything
        out[f"sync_idle_us@{n}"] = per_call_us(2000, lambda s=state: backend.sync(*s))
        other = backend.other()
        for every, label in ((1, "sync_one_new_us"), (4, "sync_1_add_per_4_searches_us")):
            times = []
            for i in range(400):  # another replica appends; this one syncs before a search
                if i % every == 0:
                    other(emb, "m", owner="a")
                t0 = time.perf_counter()
                state = backend.sync(*state)
                times.append(time.perf_counter() - t0)
            stat = statistics.median if every == 1 else statistics.mean
            out[f"{label}@{n}"] = stat(times) * 1e6
    return out


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--appends", type=int, default=2000)
    p.add_argument("--rows", default="10000,100000", help="live rows at which replay is timed")
    p.add_argument("--no-postgres", action="store_true")
    a = p.parse_args(argv)
    rows = [int(x) for x in a.rows.split(",")]

    emb = np.random.default_rng(0).random(DIM).astype(np.float32)
    image = bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8))
    results = {}
    with tempfile.TemporaryDirectory(prefix="mlsd-bench-") as tmp:
        folder = Path(tmp)
        backends = [Before(anchor_module(folder), folder)]
        backends.append(
            Layer(
                "state: SQLite",
                str(init_store(folder / "new.sqlite")),
                ObjectStore(folder / "objects", create=True).uri,
            )
        )
        pg = None
        if not a.no_postgres:
            pg = PostgresServer(fsync=True).start()
            url = str(init_store(pg.create_database("bench")))
            backends.append(
                Layer("state: PostgreSQL", url, ObjectStore(folder / "pg_objects", create=True).uri)
            )
        try:
            for b in backends:
                results[b.name] = measure(b, a.appends, rows, emb, image)
                print(f"{b.name}: done", file=sys.stderr)
        finally:
            if pg is not None:
                pg.stop()
    print(table(results))
    print(json.dumps(results))
    return results


def table(results: dict) -> str:
    base = results["sqlite3 (before)"]
    names = list(results)
    lines = ["| measure | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for key in base:
        higher_better = "rows_s" in key
        cells = []
        for n in names:
            v = results[n][key]
            ratio = v / base[key] if base[key] else float("nan")
            cells.append(f"{v:,.0f}" if n == names[0] else f"{v:,.0f} ({ratio:.2f}x)")
        unit = "rows/s, higher is better" if higher_better else "us, lower is better"
        lines.append(f"| {key} ({unit}) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
