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
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

from auditfed.store.filters import Query


class EntryRow(NamedTuple):
    """One event ready to be appended: its leaf data and the columns the store indexes.

    The columns are derived from ``data`` (the canonical event bytes), which alone is
    authoritative: they exist so that queries need not parse every event. A named
    tuple because rows cross from ingest worker processes in bulk: it pickles about
    four times faster than a dataclass.
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
    #: :func:`~auditfed.store.filters.index_key` of ``event_id`` and ``trace_id``,
    #: computed where the row is made (an ingest worker), for engines that index them.
    id_key: int | None = None
    trace_key: int | None = None


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


#: The states of an alert: raised ``open``, ``acknowledged`` by an auditor, ``closed``.
ALERT_STATUSES = ("open", "acknowledged", "closed")


@dataclass(frozen=True, slots=True)
class AlertRecord:
    """One alert of the detection engine, as stored.

    ``dedup_key`` is the engine's deterministic key (``<rule>:<index>`` or
    ``<rule>:<group>:<bucket>``): at most one alert per key is ever stored.
    ``log_index`` is the index of the alert's own ``alert.raised`` event in the log.
    ``group`` and ``details`` (type, tags, value ...) are JSON objects, ``notes`` a
    JSON list of ``{"time", "by", "status", "note", "log_index"}``.
    """

    alert_id: str
    dedup_key: str
    rule_id: str
    title: str
    level: str | None
    group: dict[str, Any]
    indexes: tuple[int, ...]
    first_time: str | None
    last_time: str | None
    raised_at: str
    log_index: int
    status: str = "open"
    notes: tuple[dict[str, Any], ...] = ()
    details: dict[str, Any] = field(default_factory=dict)
    updated_at: str | None = None


@dataclass(frozen=True, slots=True)
class DeliveryRecord:
    """One webhook delivery in the durable outbox (sent until ``delivered_at`` is set).

    ``next_attempt_at`` is a POSIX timestamp (seconds); ``payload`` the exact body
    that is signed and sent.
    """

    delivery_id: str
    alert_id: str
    sink: str
    payload: bytes
    attempts: int = 0
    next_attempt_at: float = 0.0
    last_error: str | None = None
    delivered_at: str | None = None


@dataclass(frozen=True, slots=True)
class FederatedNodeRecord:
    """A node enrolled at this hub, and what the hub verified of its log.

    ``compact`` is the compact range (concatenated subtree hashes) of the node's first
    ``position`` entries, all of them appended to this log; ``checkpoint`` the last
    node checkpoint (signed note) the hub verified and cosigned. ``status`` is
    ``active`` or ``refused`` (after an alert, until an admin reinstates it).
    """

    name: str
    key: str
    status: str
    reason: str | None
    position: int
    compact: bytes
    checkpoint: str | None
    last_seen: str | None
    enrolled_at: str
    updated_at: str | None = None


class WriteTransaction(abc.ABC):
    """One atomic write: committed as a whole by the context manager, or not at all."""

    @abc.abstractmethod
    def existing_indexes(self, rows: Sequence[EntryRow]) -> dict[tuple[str, str], int]:
        """Indexes of indexed events among the ``(service, event_id)`` keys of ``rows``
        (rows, not bare keys: a row carries the index key its ingest worker made).

        Only the index knows keys; the sequencer remembers those of entries it has
        committed but not yet indexed.
        """

    @abc.abstractmethod
    def append_entries(self, first_index: int, rows: Sequence[EntryRow]) -> None:
        """Store ``rows`` at indexes ``first_index, first_index + 1, ...``."""

    @abc.abstractmethod
    def put_tiles(self, tiles: Mapping[tuple[int, int], bytes]) -> None:
        """Insert or replace tiles (a partial tile is rewritten as it grows)."""

    @abc.abstractmethod
    def add_checkpoint(self, checkpoint: CheckpointRecord) -> None:
        """Keep a signed checkpoint (commit it with ``durable=True``)."""


class IndexTransaction(abc.ABC):
    """Writes to the query index: it trails the log and is rebuilt from it."""

    @abc.abstractmethod
    def index_entries(self, first_index: int, rows: Sequence[EntryRow]) -> None:
        """Add rows to the query index and record that it now covers them."""


class Store(abc.ABC):
    """Everything auditfed keeps. Implementations: SQLiteStore, PostgresStore."""

    url: str

    def index_transaction(self) -> Any:
        """A context manager yielding an :class:`IndexTransaction`; it may run in
        another thread at the same time as :meth:`transaction`."""
        return self.transaction()

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

    # --- retention ---
    def retained_from(self) -> int:
        """Entries below this index were removed by retention (0: none were).

        Their leaf hashes stay in the level-0 tiles, so the tree, every proof and
        every checkpoint still verify; only their bytes are gone.
        """
        value = self.get_meta("retained_from")
        return int(value) if value else 0

    @abc.abstractmethod
    def prune_before(self, index: int) -> int:
        """Retention: remove the entries (and their index rows) below ``index``, as far
        as the store's granularity allows; never the newest entry, from which the
        log's size is known. Returns :meth:`retained_from` afterwards."""

    # --- records handed to the log's writer ---
    @abc.abstractmethod
    def hand_over(self, rows: Sequence[EntryRow], received_by: str) -> None:
        """Queue ``rows`` (with producer-given ids) for the process that writes the log,
        durably: the records of administrative acts a CLI made while a server runs.

        SQLite: a queue the running server drains (:meth:`handed_over`); PostgreSQL: the
        cluster's ``pending`` table, which the leader drains like any follower's events.
        """

    @abc.abstractmethod
    def is_handed_over(self, service: str, event_id: str) -> bool:
        """Whether a handed-over record still waits for the log's writer."""

    def handed_over(self, limit: int = 100) -> list[tuple[str, str, bytes]]:
        """``(service, event_id, data)`` of queued records the server must append
        (none where the leader drains its own queue)."""
        return []

    def forget_handed_over(self, keys: Sequence[tuple[str, str]]) -> None:  # noqa: B027 - optional
        """Drop handed-over records once they are durable in the log."""

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

    @abc.abstractmethod
    def search_sizes(self, query: Query) -> list[tuple[int, int]]:
        """``(index, bytes of data)`` of what :meth:`search` would return, without reading the data."""

    @abc.abstractmethod
    def entry_sizes(self, start: int, end: int) -> list[tuple[int, int]]:
        """``(index, bytes of data)`` of what :meth:`entries` would return, without reading the data."""

    def search_within(self, query: Query, max_bytes: int) -> tuple[list[tuple[int, bytes]], bool]:
        """:meth:`search`, cut to at most ``max_bytes`` of event data (always at least one
        event, whatever its size), so a page's memory does not grow with its events' size;
        and whether more matches may follow (page on from the last index)."""
        sizes = self.search_sizes(query)
        count = _within(sizes, max_bytes)
        if not count:
            return [], False
        # The same first ``count`` matches: bounded at the first one, so events appended
        # since the sizes were read cannot shift the page.
        first = sizes[0][0]
        rows = self.search(replace(query, limit=count, after=first + 1 if query.newest_first else first - 1))
        return rows, count < len(sizes) or len(sizes) == query.limit

    def entries_within(self, start: int, end: int, max_bytes: int) -> list[tuple[int, bytes]]:
        """:meth:`entries` from ``start``, as many as fit in ``max_bytes`` (at least one)."""
        sizes = self.entry_sizes(start, end)
        count = _within(sizes, max_bytes)
        return self.entries(start, sizes[count - 1][0] + 1) if count else []

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

    # --- alerts ---
    @abc.abstractmethod
    def add_alerts(
        self, alerts: Sequence[AlertRecord], deliveries: Sequence[DeliveryRecord]
    ) -> list[str]:
        """Store new alerts and queue their webhook deliveries, in one transaction.

        An alert whose ``dedup_key`` is already stored is skipped, and so are its
        deliveries. Returns the ids of the alerts stored.
        """

    @abc.abstractmethod
    def stored_alert_keys(self, keys: Sequence[str]) -> set[str]:
        """The dedup keys among ``keys`` that an alert is stored under."""

    @abc.abstractmethod
    def get_alert(self, alert_id: str) -> AlertRecord | None: ...

    @abc.abstractmethod
    def list_alerts(
        self,
        *,
        status: str | None = None,
        rule_id: str | None = None,
        level: str | None = None,
        before: int | None = None,
        after: int | None = None,
        limit: int = 100,
    ) -> list[AlertRecord]:
        """Alerts matching every given filter, by ``log_index``.

        Newest first, below ``before`` when given; with ``after``, oldest first
        above it instead (catching up a stream).
        """

    @abc.abstractmethod
    def update_alert(
        self,
        alert_id: str,
        *,
        expected: Sequence[str],
        status: str,
        note: dict[str, Any],
        updated_at: str,
    ) -> AlertRecord | None:
        """Set the status if it is one of ``expected`` (compare-and-set) and append
        ``note`` to the notes; the updated alert, or ``None`` if it was not in an
        expected status (or does not exist)."""

    @abc.abstractmethod
    def pending_deliveries(
        self, sink: str, *, due_before: float, limit: int = 100
    ) -> list[DeliveryRecord]:
        """Undelivered deliveries of ``sink`` with ``next_attempt_at <= due_before``,
        oldest attempt time first (then by delivery id)."""

    @abc.abstractmethod
    def finish_delivery(
        self,
        delivery_id: str,
        *,
        attempts: int,
        next_attempt_at: float,
        error: str | None,
        delivered_at: str | None,
    ) -> None:
        """Record an attempt: delivered (``delivered_at`` set) or failed (``error``,
        retried at ``next_attempt_at``)."""

    # --- federation ---
    @abc.abstractmethod
    def federation_nodes(self) -> list[FederatedNodeRecord]:
        """Every node enrolled at this hub, by name."""

    @abc.abstractmethod
    def get_federation_node(self, name: str) -> FederatedNodeRecord | None: ...

    @abc.abstractmethod
    def put_federation_node(self, record: FederatedNodeRecord) -> None:
        """Insert or replace a node's record (durably)."""

    @abc.abstractmethod
    def advance_federation_node(
        self, name: str, expected_position: int, position: int, compact: bytes, checkpoint: str,
        seen: str,
    ) -> bool:
        """Move a node's verified state (position, compact range, checkpoint) forward,
        only if it is still at ``expected_position``; its status and reason are left as
        they are. False if the record moved meanwhile (an admin re-baselined the node).

        One conditional update, no read-modify-write: an admin's refusal or
        reinstatement racing a batch is never overwritten by it."""

    @abc.abstractmethod
    def add_cosignature(self, size: int, witness: str, line: str, created_at: str) -> None:
        """Keep a witness's cosignature line of this log's checkpoint of ``size``
        (replacing that witness's earlier one of the same size)."""

    @abc.abstractmethod
    def cosignatures(self, size: int) -> list[str]:
        """The cosignature lines kept for the checkpoint of ``size``."""

    @abc.abstractmethod
    def latest_cosigned_size(self) -> int | None:
        """The size of the latest checkpoint with a cosignature, if any."""

    @abc.abstractmethod
    def close(self) -> None: ...


def _within(sizes: Sequence[tuple[int, int]], max_bytes: int) -> int:
    """How many of ``sizes`` fit in ``max_bytes`` in order; at least one if there is one."""
    total = 0
    for count, (_, size) in enumerate(sizes):
        total += size
        if total > max_bytes and count:
            return count
    return len(sizes)
