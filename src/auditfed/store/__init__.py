"""Storage: one interface, two engines.

:class:`~auditfed.store.base.Store` is everything the rest of auditfed asks of
storage: the log's entries and tiles, signed checkpoints, API tokens, and the query
indexes over events. ``sqlite`` is the embedded default for one machine;
``postgres`` runs many stateless nodes on one database. :func:`open_store` picks the
engine from the store URL.
"""

from auditfed.store.base import (
    CheckpointRecord,
    EntryRow,
    Store,
    TokenRecord,
    WriteTransaction,
)
from auditfed.store.factory import open_store

__all__ = [
    "CheckpointRecord",
    "EntryRow",
    "Store",
    "TokenRecord",
    "WriteTransaction",
    "open_store",
]
