"""The storage interface every engine implements.

Writes happen only through :class:`WriteTransaction` from the sequencer's single
writer (one at a time), so engines need no write-write concurrency control of their
own. Reads may come from any thread at any time and must see only committed state.

Two kinds of data: the log (entries, tiles, checkpoints) is authoritative and written
in the sequencer's commit, which is all an acknowledgement waits for; the index (one
row of searchable columns per event, including the ``(service, id)`` key that
deduplicates) is derived from it, written by the same writer in larger batches
shortly after, and can always be rebuilt from the entries.

The log's tree is kept as tiles (C2SP tlog-tiles layout, height 8): the store keeps
them as opaque blobs keyed by ``(level, index)``; :mod:`auditfed.ledger.tiles` knows
what is inside.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from auditfed.store.filters import Query


@dataclass(frozen=True, slots=True)
class EntryRow:
    """One event ready to be appended: its leaf data and the columns the store indexes.

    The columns are derived from ``data`` (the canonical event bytes), which alone is
    authoritative: they exist so that queries need not parse every event.
    """

    data: bytes
    leaf_hash: bytes
    service: str
    event_id: str
    time: str
    action: str
    actor: str
    principal: str | None
    resource: str | None
    trace_id: str | None
    environment: str | None
    outcome: str


@dataclass(frozen=True, slots=True)
class CheckpointRecord:
    size: int
    root: bytes
    note: str
    created_at: str


@dataclass(frozen=True, slots=True)
class TokenRecord:
    token_id: str
    role: str
    service: str | None
    environment: str | None
    description: str | None
    created_at: str
    expires_at: str | None
    revoked_at: str | None


class WriteTransaction(abc.ABC):
    """One atomic write: committed as a whole by the context manager, or not at all."""

    @abc.abstractmethod
    def existing_indexes(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], int]:
        """Indexes of indexed events among ``(service, event_id)`` keys.

        Only the index knows keys; the sequencer remembers those of entries it has
        committed but not yet indexed.
        """

    @abc.abstractmethod
    def append_entries(self, first_index: int, rows: Sequence[EntryRow]) -> None:
        """Store ``rows`` at indexes ``first_index, first_index + 1, ...``."""

    @abc.abstractmethod
    def index_entries(self, first_index: int, rows: Sequence[EntryRow]) -> None:
        """Add rows to the query index and record that it now covers them."""

    @abc.abstractmethod
    def put_tiles(self, tiles: Mapping[tuple[int, int], bytes]) -> None:
        """Insert or replace tiles (a partial tile is rewritten as it grows)."""

    @abc.abstractmethod
    def add_checkpoint(self, checkpoint: CheckpointRecord) -> None:
        """Keep a signed checkpoint (commit it with ``durable=True``)."""


class Store(abc.ABC):
    """Everything auditfed keeps. Implementations: SQLiteStore, PostgresStore."""

    url: str

    # --- writing (the sequencer's single writer) ---
    @abc.abstractmethod
    def transaction(self, *, durable: bool = False) -> Any:
        """A context manager yielding a :class:`WriteTransaction`.

        ``durable=True`` forces this commit to stable storage even when the store is
        configured for process-crash durability only (used for checkpoints).
        """

    # --- the log ---
    @abc.abstractmethod
    def size(self) -> int:
        """Number of entries committed to the log."""

    @abc.abstractmethod
    def read_tiles(self, keys: Sequence[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
        """The stored tiles among ``keys`` (the :class:`TileReader` protocol)."""

    @abc.abstractmethod
    def indexed_size(self) -> int:
        """Entries ``[0, n)`` are in the query index (it may trail the log briefly)."""

    @abc.abstractmethod
    def iter_tiles(self, level: int) -> Iterator[tuple[int, bytes]]:
        """All tiles of one level in index order (for verification)."""

    @abc.abstractmethod
    def entries(self, start: int, end: int) -> list[tuple[int, bytes]]:
        """``(index, data)`` for stored entries with ``start <= index < end``, in order."""

    @abc.abstractmethod
    def iter_entries(self, start: int = 0, chunk: int = 10_000) -> Iterator[tuple[int, bytes]]:
        """Every stored entry from ``start`` in index order, read in chunks."""

    # --- checkpoints ---
    @abc.abstractmethod
    def latest_checkpoint(self) -> CheckpointRecord | None: ...

    @abc.abstractmethod
    def checkpoint_at_least(self, size: int) -> CheckpointRecord | None:
        """The oldest checkpoint whose size is at least ``size``."""

    @abc.abstractmethod
    def checkpoints(self) -> list[CheckpointRecord]:
        """Every checkpoint ever published, oldest first."""

    # --- queries ---
    @abc.abstractmethod
    def search(self, query: Query) -> list[tuple[int, bytes]]:
        """``(index, data)`` of matching events, in the query's order and page."""

    # --- metadata and tokens ---
    @abc.abstractmethod
    def get_meta(self, key: str) -> str | None: ...

    @abc.abstractmethod
    def set_meta(self, key: str, value: str) -> None: ...

    @abc.abstractmethod
    def add_token(self, digest: bytes, record: TokenRecord) -> None: ...

    @abc.abstractmethod
    def find_token(self, digest: bytes) -> TokenRecord | None: ...

    @abc.abstractmethod
    def list_tokens(self) -> list[TokenRecord]: ...

    @abc.abstractmethod
    def revoke_token(self, token_id: str, when: str) -> bool: ...

    @abc.abstractmethod
    def close(self) -> None: ...
