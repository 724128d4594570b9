"""Pick the store engine from its URL: ``sqlite:///path`` or ``postgresql://...``."""

from __future__ import annotations

from auditfed.errors import ConfigError
from auditfed.store.base import Store


def open_store(url: str, *, fsync: bool = True) -> Store:
    if url.startswith("sqlite:///"):
        from auditfed.store.sqlite import SQLiteStore

        return SQLiteStore(url.removeprefix("sqlite:///"), fsync=fsync)
    if url.startswith(("postgresql://", "postgres://")):
        from auditfed.store.postgres import PostgresStore  # type: ignore[import-not-found]

        return PostgresStore(url)
    raise ConfigError(f"unknown store URL {url!r}: use sqlite:///PATH or postgresql://...")
