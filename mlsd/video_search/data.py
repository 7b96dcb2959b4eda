"""Video search on a user's own (video, caption) pairs: the documented input format.

Format (README, "Your own data"): a CSV or JSONL table with ``video`` (a path, relative to the
table's folder, or any fsspec URI) and ``caption`` (what a person would search to find it);
one row per caption (a video may have several). The text-video model trains on these pairs
instead of the SYNTHETIC montages of the demo. Bad rows are named and counted
(:class:`mlsd.data.sources.BadRows`); a video that cannot be decoded is counted by the job.
"""

from __future__ import annotations

import os
import posixpath

from mlsd.data.sources import BadRows, read_table, require_columns

MAX_CAPTION_CHARS = 1000


def read_pairs(path: str, max_bad_fraction: float = 0.5) -> tuple[list[tuple[str, str]], BadRows]:
    """-> [(video path or URI, caption)] in file order, and the bad rows: an empty video or
    caption, a caption over :data:`MAX_CAPTION_CHARS`, a row seen before. A table without
    ``video`` and ``caption`` columns, or one that is mostly bad, is a :class:`DataError`."""
    columns, rows = read_table(path)
    require_columns(path, columns, ("video", "caption"))
    base = posixpath.dirname(path) if "://" in path else os.path.dirname(os.path.abspath(path))
    bad, seen, out = BadRows(), set(), []
    for _, where, rec in bad.readable(rows, path):
        video = str(rec.get("video") or "").strip()
        caption = " ".join(str(rec.get("caption") or "").split())
        if not video:
            bad.add("empty video", f"{where}, column 'video'")
            continue
        if not caption:
            bad.add("empty caption", f"{where}, column 'caption'")
            continue
        if len(caption) > MAX_CAPTION_CHARS:
            bad.add(f"caption over {MAX_CAPTION_CHARS} characters", f"{where}, column 'caption'")
            continue
        if "://" not in video and not video.startswith("/"):
            video = posixpath.join(base, video)
        if (video, caption) in seen:
            bad.add("duplicate row", where)
            continue
        seen.add((video, caption))
        out.append((video, caption))
    bad.check(path, max_bad_fraction)
    return out, bad
