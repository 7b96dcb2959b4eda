"""The one state layer: every log, queue and key store the apps acknowledge writes to.

- :mod:`mlsd.state.url`: store URLs (``sqlite:///path`` or a bare path on a laptop,
  ``postgresql+psycopg://user@host/db`` on a cluster; the password from the environment).
- :mod:`mlsd.state.db`: :class:`Database` (SQLAlchemy Core; appends ordered by commit) and
  :func:`init_store`, the only way a store is created or migrated.
- :mod:`mlsd.state.schema`: every table, in one place.
- :mod:`mlsd.state.objects`: bytes in an object store (a folder, ``s3://``), keys in rows.
- :mod:`mlsd.state.access`: ``may_see`` / ``may_change``, one rule for every system.
- :mod:`mlsd.state.log`: :class:`Log`, what every log, queue and key store is built on.
- :mod:`mlsd.state.ids`: public ids of live items (a keyed permutation of the log's seq).

``python -m mlsd.state init URL`` creates a store; ``check URL`` says whether it can be used.
"""

from mlsd.state.access import ADMIN, Caller, access, may_change, may_see
from mlsd.state.db import Database, SchemaMismatch, init_store
from mlsd.state.ids import ID_BITS, LIVE_ID_BASE, IdPermutation
from mlsd.state.log import Log
from mlsd.state.objects import ObjectStore
from mlsd.state.url import (
    StateError,
    StoreMissing,
    StoreUnavailable,
    StoreURL,
    StoreURLError,
    parse_url,
    pin_url,
)

__all__ = [
    "ADMIN",
    "ID_BITS",
    "LIVE_ID_BASE",
    "Caller",
    "Database",
    "IdPermutation",
    "Log",
    "ObjectStore",
    "SchemaMismatch",
    "StateError",
    "StoreMissing",
    "StoreURL",
    "StoreURLError",
    "StoreUnavailable",
    "access",
    "init_store",
    "may_change",
    "may_see",
    "parse_url",
    "pin_url",
]
