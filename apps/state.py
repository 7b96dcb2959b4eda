"""Every store a serve config's apps write, created (``init``) or checked (``check``) at once:
state stores (logs, queues, API keys) and object stores (uploaded bytes, thumbnails, blurred
outputs). Each app's typed builder args say which stores it uses (``AppArgs.stores``), defaults
included, so nothing the apps will open is left out.

    python -m apps.state init serve_config.yaml      # `make serve` runs this first
    python -m apps.state check serve_config.gpu.yaml
"""

from __future__ import annotations

import argparse
import importlib
import typing

import yaml

from mlsd.state.__main__ import report


def app_stores(config: dict) -> tuple[list[str], list[str], dict[str, str]]:
    """(state store URLs, object store URIs, {store URL: its app's object store}) of every
    application in a serve config (the last: where a log written before the state layer puts
    the uploaded bytes it held)."""
    urls, objects, uploads = [], [], {}
    for app in config.get("applications", []):
        module, _, name = app["import_path"].partition(":")
        builder = getattr(importlib.import_module(module), name)
        args_type = next(iter(typing.get_type_hints(builder).values()))
        dbs, objs = args_type(**app.get("args", {})).stores()
        urls += [u for u in dbs.values() if u and u not in urls]
        objects += [o for o in objs.values() if o and o not in objects]
        first = next((o for o in objs.values() if o), None)
        uploads.update({u: first for u in dbs.values() if u and first})
    return urls, objects, uploads


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m apps.state", description=__doc__.split("\n")[0])
    p.add_argument("command", choices=["init", "check"])
    p.add_argument("config", help="a serve config (serve_config.yaml)")
    a = p.parse_args(argv)
    with open(a.config) as f:
        urls, objects, uploads = app_stores(yaml.safe_load(f))
    return report(a.command, urls, objects, uploads)


if __name__ == "__main__":
    raise SystemExit(main())
