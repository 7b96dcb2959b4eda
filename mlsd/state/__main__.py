"""Create, migrate or check state stores (the only way a store is ever created).

    python -m mlsd.state init sqlite:///var/state.sqlite         # or a bare path
    python -m mlsd.state init postgresql+psycopg://mlsd@db:5432/mlsd   # $MLSD_STATE_PASSWORD
    python -m mlsd.state init --objects s3://bucket/prefix         # object stores too
    python -m mlsd.state check URL [--objects URI]                 # exit 1, naming what fails

Every app's stores at once, from a serve config: ``python -m apps.state init serve_config.yaml``.
"""

from __future__ import annotations

import argparse
import sys

from mlsd.state.db import Database, init_store
from mlsd.state.objects import ObjectStore
from mlsd.state.url import StateError


def run(
    command: str, urls: list[str], objects: list[str], uploads: dict | None = None
) -> list[str]:
    """``init`` or ``check`` each store (object stores first: a log written before the state
    layer moves its uploaded bytes to ``uploads[url]`` when ``init`` carries it over); -> one
    line per store."""
    out = []
    for uri in objects:
        store = ObjectStore(uri, create=command == "init")
        out.append(f"object store {store.uri}: {'ready' if command == 'init' else 'ok'}")
    for url in urls:
        if command == "init":
            out.append(f"state store {init_store(url, (uploads or {}).get(url))}: ready")
        else:
            db = Database(url)
            db.close()
            out.append(f"state store {db.url}: ok")
    return out


def report(command: str, urls: list[str], objects: list[str], uploads: dict | None = None) -> int:
    """``run`` for a command line: a line per store; exit 1 with the reason on the first
    store that cannot be used."""
    try:
        for line in run(command, urls, objects, uploads):
            print(line)
    except StateError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m mlsd.state", description=__doc__.split("\n")[0])
    p.add_argument("command", choices=["init", "check"])
    p.add_argument("urls", nargs="*", help="state store URLs (or SQLite paths)")
    p.add_argument("--objects", action="append", default=[], help="object store folder / URI")
    p.add_argument(
        "--uploads",
        default=None,
        help="init: where an old log's uploaded bytes go (its app's "
        "object store; only for a file written before the state layer)",
    )
    a = p.parse_args(argv)
    if not a.urls and not a.objects:
        p.error("name at least one store")
    uploads = {u: a.uploads for u in a.urls} if a.uploads else None
    return report(a.command, a.urls, a.objects, uploads)


if __name__ == "__main__":
    raise SystemExit(main())
