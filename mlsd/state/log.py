"""What every log, queue and key store is: rows in an existing state store, bytes (where it
keeps any) in an object store, both checked by the health check of the replica holding it."""

from __future__ import annotations

import os

from mlsd.state.db import Database
from mlsd.state.objects import ObjectStore
from mlsd.state.url import StoreURL


class Log:
    """An existing store (``python -m mlsd.state init`` made it; opening never creates one)
    and, optionally, the object store of its bytes."""

    def __init__(
        self,
        store: str | os.PathLike | StoreURL | Database,
        objects: str | os.PathLike | ObjectStore | None = None,
    ):
        self.db = store if isinstance(store, Database) else Database(store)
        self.objects = (
            objects
            if objects is None or isinstance(objects, ObjectStore)
            else (ObjectStore(objects))
        )

    def check(self) -> None:
        """Raise, naming the store, unless the rows and the bytes can be used (a replica's
        health check)."""
        self.db.check()
        if self.objects is not None:
            self.objects.check()

    def close(self) -> None:
        self.db.close()
