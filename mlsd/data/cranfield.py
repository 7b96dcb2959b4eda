"""The Cranfield collection (1,400 aeronautics abstracts, 225 queries, graded judgements),
used as the text branch's test collection. Protocol of ANCHORS.md: queries by position
1..225; gains 1->4, 2->3, 3->2, 4->1, -1->0; a document's text = title + body."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

DEFAULT_DIR = Path(
    os.environ.get(
        "CRANFIELD_DIR", Path(__file__).resolve().parents[3] / "shared" / "data" / "cranfield"
    )
)
GAINS = {1: 4, 2: 3, 3: 2, 4: 1, -1: 0}


@dataclass
class Cranfield:
    doc_ids: list[int]
    titles: list[str]
    bodies: list[str]
    queries: list[str]  # by position: query i+1
    qrels: list[dict[int, int]]  # per query, doc id -> gain > 0


def _records(text: str) -> list[dict[str, str]]:
    out = []
    for chunk in re.split(r"^\.I\s+", text, flags=re.M)[1:]:
        head, *rest = chunk.split("\n", 1)
        rec, field = {"I": head.strip()}, None
        for line in (rest[0] if rest else "").splitlines():
            m = re.match(r"^\.([TAWB])\s*$", line)
            if m:
                field = m.group(1)
                rec[field] = ""
            elif field:
                rec[field] += line + "\n"
        out.append({k: v.strip() for k, v in rec.items()})
    return out


def load_cranfield(path: str | Path | None = None) -> Cranfield:
    d = Path(path) if path else DEFAULT_DIR
    if not (d / "cran.all.1400").exists():
        raise FileNotFoundError(
            f"Cranfield not found under {d} (cran.all.1400, cran.qry, cranqrel)"
        )
    read = lambda n: (d / n).read_text(encoding="latin-1").replace("\r\n", "\n")  # noqa: E731
    docs = _records(read("cran.all.1400"))
    queries = _records(read("cran.qry"))
    qrels: list[dict[int, int]] = [{} for _ in queries]
    for line in read("cranqrel").split("\n"):
        parts = line.split()
        if len(parts) == 3:
            q, doc, rel = (int(x) for x in parts)
            gain = GAINS.get(rel, 0)
            if gain > 0:
                qrels[q - 1][doc] = gain
    return Cranfield(
        doc_ids=[int(r["I"]) for r in docs],
        titles=[r.get("T", "") for r in docs],
        bodies=[r.get("W", "") for r in docs],
        queries=[r.get("W", "") for r in queries],
        qrels=qrels,
    )
