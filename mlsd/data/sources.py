"""A user's own data: where it is (a folder, a glob, any fsspec URI) and what was wrong with it.

Every reader of the documented input formats ("Your own data" in README.md) lists its files
with :func:`list_files`, reads small tables with :func:`read_text_capped` (a 2 GB line never
reaches memory) and counts what it had to skip in a :class:`BadRows`: each bad row is named
by file, row and column, the counts go into the job's metrics, and
:meth:`BadRows.check` fails the job before anything is written when most of the input is bad.
"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import fsspec

MAX_LINE_BYTES = 1 << 20  # 1 MiB: a longer line in a table is a broken file, not data
MAX_TABLE_BYTES = 1 << 30  # 1 GiB: a side table (labels.csv) larger than this is refused


class DataError(ValueError):
    """The input cannot be used; the message names the file (and row / column) and says why."""


def _protocol(fs) -> str:
    return fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]


def list_files(src: str, extensions: tuple[str, ...]) -> list[str]:
    """The files under ``src`` with one of ``extensions`` (lower-case, with the dot), sorted:
    ``src`` is a folder (searched recursively), a glob (``photos/*.jpg``), one file, a ``.txt``
    list of paths, or the same on any fsspec URI (``s3://bucket/photos``). Remote files keep
    their scheme, local ones are plain paths. A source that does not exist or holds no such
    file is a :class:`DataError`."""
    if src.endswith(".txt") and Path(src).is_file():
        return [ln.strip() for ln in Path(src).read_text().splitlines() if ln.strip()]
    try:
        fs, root = fsspec.core.url_to_fs(src)
        if any(c in root for c in "*?["):
            paths = fs.glob(root)
        elif fs.isfile(root):
            paths = [root]
        elif fs.isdir(root):
            paths = fs.find(root)
        else:
            raise DataError(f"{src}: no such file or folder")
    except DataError:
        raise
    except Exception as e:  # a bucket that is not there, no credentials, ...
        raise DataError(f"{src}: cannot list it: {type(e).__name__}: {e}") from e
    paths = [p for p in paths if p.lower().endswith(extensions)]
    if not paths:
        raise DataError(f"{src}: no {'/'.join(extensions)} files in it")
    proto = _protocol(fs)
    return sorted(p if proto in ("file", "local") else f"{proto}://{p}" for p in paths)


def relative_name(path: str, src: str) -> str:
    """``path`` relative to the folder ``src`` names (how a side table such as ``labels.csv``
    refers to a file): ``photos/a/b.jpg`` under ``photos`` is ``a/b.jpg``."""
    root = src.rstrip("/")
    if any(c in root for c in "*?["):
        root = root.rsplit("/", 1)[0]
    _, root_path = fsspec.core.url_to_fs(root)
    _, file_path = fsspec.core.url_to_fs(path)
    root_path = root_path.rstrip("/")
    if file_path.startswith(root_path + "/"):
        return file_path[len(root_path) + 1 :]
    return file_path.rsplit("/", 1)[-1]


def read_text_capped(
    path: str, max_bytes: int = MAX_TABLE_BYTES, max_line: int = MAX_LINE_BYTES
) -> list[str]:
    """A small text table's lines (local path or URI), refusing a file over ``max_bytes`` or
    a line over ``max_line`` as a :class:`DataError` naming the line, without reading it all:
    the file is read in chunks and a line longer than the cap stops the read."""
    lines: list[str] = []
    try:
        with fsspec.open(path, "rb") as f:
            buf, total, lineno = b"", 0, 0
            while chunk := f.read(1 << 16):
                total += len(chunk)
                if total > max_bytes:
                    raise DataError(f"{path}: larger than {max_bytes} bytes")
                buf += chunk
                *done, buf = buf.split(b"\n")
                for raw in done:
                    lineno += 1
                    lines.append(_decode(raw, path, lineno))
                if len(buf) > max_line:
                    raise DataError(f"{path}: line {lineno + 1} is over {max_line} bytes")
            if buf:
                lines.append(_decode(buf, path, lineno + 1))
    except DataError:
        raise
    except FileNotFoundError as e:
        raise DataError(f"{path}: no such file") from e
    except Exception as e:
        raise DataError(f"{path}: cannot read it: {type(e).__name__}: {e}") from e
    return lines


def _decode(raw: bytes, path: str, lineno: int) -> str:
    try:
        return raw.decode("utf-8-sig" if lineno == 1 else "utf-8").rstrip("\r")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: line {lineno} is not UTF-8 ({e.reason})") from e


def read_table(
    path: str, max_bytes: int = MAX_TABLE_BYTES
) -> tuple[list[str], list[tuple[int, dict]]]:
    """(columns, [(row number, {column: value})]) of a CSV (a header row; quoted fields may
    hold newlines) or a JSONL file (``.jsonl`` / ``.ndjson``: one object a line). A row that
    cannot be read is ``{"__error__": why}``, for the caller to count; an empty file is a
    :class:`DataError`."""
    lines = read_text_capped(path, max_bytes=max_bytes)
    if not any(ln.strip() for ln in lines):
        raise DataError(f"{path}: empty file")
    if path.lower().endswith((".jsonl", ".ndjson")):
        rows, columns = [], {}
        for n, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                obj = {"__error__": f"not JSON: {e.msg}"}
            if not isinstance(obj, dict):
                obj = {"__error__": "not a JSON object"}
            columns.update(dict.fromkeys(k for k in obj if k != "__error__"))
            rows.append((n, obj))
        return list(columns), rows
    reader = csv.reader(io.StringIO("\n".join(lines)))
    header = [h.strip() for h in next(reader)]
    rows = []
    for row in reader:
        if not row:
            continue
        n = reader.line_num
        if len(row) != len(header):
            rows.append((n, {"__error__": f"{len(row)} fields, the header has {len(header)}"}))
        else:
            rows.append((n, dict(zip(header, row, strict=True))))
    return header, rows


def require_columns(path: str, columns: list[str], needed: tuple[str, ...]) -> None:
    """A table without one of ``needed`` is a :class:`DataError` naming it and what it has."""
    for col in needed:
        if col not in columns:
            raise DataError(f"{path}: no column {col!r} (the columns are {columns[:20]})")


@dataclass
class BadRows:
    """What a reader skipped: counts by reason, and the first examples, each naming the file,
    row and column. ``total`` counts every row seen, good or bad."""

    total: int = 0
    reasons: Counter = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)
    max_examples: int = 20
    left_out: Counter = field(default_factory=Counter)  # fine rows left out on purpose, by why

    def add(self, reason: str, where: str) -> None:
        self.reasons[reason] += 1
        if len(self.examples) < self.max_examples:
            self.examples.append(f"{where}: {reason}")

    def merge(self, other: BadRows) -> None:
        self.total += other.total
        self.reasons.update(other.reasons)
        self.left_out.update(other.left_out)
        room = self.max_examples - len(self.examples)
        self.examples.extend(other.examples[: max(0, room)])

    def readable(self, rows: list[tuple[int, dict]], path: str) -> Iterator[tuple[int, str, dict]]:
        """:func:`read_table`'s rows, each counted: an unreadable one is recorded here, the
        others are yielded as (row number, "<path>, row <n>", record)."""
        for n, rec in rows:
            self.total += 1
            where = f"{path}, row {n}"
            if "__error__" in rec:
                self.add(rec["__error__"], where)
                continue
            yield n, where, rec

    @property
    def count(self) -> int:
        return sum(self.reasons.values())

    def report(self) -> dict:
        """For the job's metrics and the artifact's manifest."""
        return {
            "rows": self.total,
            "bad_rows": self.count,
            "bad_by_reason": dict(self.reasons),
            "bad_examples": list(self.examples),
            "left_out": dict(self.left_out),
        }

    def check(self, what: str, max_bad_fraction: float = 0.5) -> None:
        """Fail (:class:`DataError`) when nothing is usable or more than ``max_bad_fraction``
        of the rows are bad: a job that goes on would train on the remains of a broken input."""
        if self.total == 0:
            raise DataError(f"{what}: no rows")
        if self.count >= self.total or self.count > max_bad_fraction * self.total:
            raise DataError(
                f"{what}: {self.count} of {self.total} rows are bad (more than "
                f"{max_bad_fraction:.0%}); first: " + "; ".join(self.examples[:5])
            )
