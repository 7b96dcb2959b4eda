"""The serve tests' HTTP clients: ``api`` carries the test identity's bearer token (user
``tester``: search, write, admin); :func:`as_user` gives another identity's client."""

from __future__ import annotations

import requests

api = requests.Session()  # the ``keys`` fixture (tests/conftest.py) sets its token


def as_user(token: str | None) -> requests.Session:
    s = requests.Session()
    if token is not None:
        s.headers["Authorization"] = f"Bearer {token}"
    return s
