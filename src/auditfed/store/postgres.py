"""The PostgreSQL store: many stateless auditfed nodes on one database.

Same interface and same answers as :mod:`auditfed.store.sqlite`, plus what the
cluster (:mod:`auditfed.ingest.cluster`) needs: a table of *pending* events (durable,
acknowledged, not yet sequenced), the log head row that fences the leader, and the
nodes' heartbeats.

Schema: versioned migrations (:data:`MIGRATIONS`) applied at start in one
transaction under an advisory lock, so nodes starting together migrate once; the
``schema_version`` table holds how many ran.

Partitioning: ``events`` and ``event_index`` are partitioned natively with
``PARTITION BY RANGE (idx)`` on the log index, ``partition_size`` entries per
partition (1,000,000 by default, fixed when the database is created). Why the index
and not the event time: every read of the log (entries ``[start, end)``, proofs,
verification, the join of the query index with the entries) is by index, so every
query prunes to the partitions it needs; the index is dense and only grows, so
writes always go to the newest partition and a partition, once full, never changes
again; and the producer's ``time`` is not ordered (late events, back-fills), which
would scatter appends over old partitions. Index ranges *are* time ranges in the
order of arrival (``observed_time``), so retention still works by age
(:mod:`auditfed.store.retention`): :meth:`PostgresStore.prune_before` drops the whole
partitions below an index. Tiles and signed checkpoints are kept: proofs for the
entries that remain keep verifying. Partitions are created ahead as the log grows (the next
one once the newest is half full), outside the sequencer's transaction; the
``partitions`` table lists them.

Durability: an answer waits for ``COMMIT``, which with PostgreSQL's defaults waits
until the commit record is flushed to the write-ahead log on disk. The settings that
matter (see docs/postgresql.md): ``fsync = on`` and ``full_page_writes = on`` (never
turn them off outside tests: a power loss could corrupt the whole database), and
``synchronous_commit = on`` (or ``remote_apply`` with synchronous standbys, so an
acknowledged event also survives the loss of the primary). ``off`` or ``local`` with
standbys would let a crash take back acknowledged events. The store checks the
server's values at start and logs a warning when they are unsafe.

Connections: a ``psycopg_pool.ConnectionPool`` (connections checked on checkout, so a
restarted server costs no failed request beyond the outage); connection failures are
:class:`~auditfed.errors.Unavailable` (HTTP 503 with Retry-After), other database
errors :class:`~auditfed.errors.StoreError`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool, PoolTimeout

from auditfed.errors import ConfigError, StoreError, Unavailable
from auditfed.store.base import (
    AlertRecord,
    CheckpointRecord,
    DeliveryRecord,
    EntryRow,
    FederatedNodeRecord,
    IndexTransaction,
    Store,
    TokenRecord,
    WriteTransaction,
)
from auditfed.store.filters import POSTGRES, Query, compile_where
from auditfed.store.sql import (
    ALERT_COLUMNS,
    DELIVERY_COLUMNS,
    TOKEN_COLUMNS,
    advance_node,
    alert_listing,
)

log = logging.getLogger(__name__)

DEFAULT_PARTITION_SIZE = 1_000_000
#: Advisory lock keys (per database): schema migrations and the leader.
MIGRATION_LOCK = 0x61756466_0001
LEADER_LOCK = 0x61756466_0002

_C = 'COLLATE "C"'  # byte order, as SQLite compares text: the same answers to range queries

#: Schema migrations, applied in order; ``schema_version`` holds how many ran.
MIGRATIONS: tuple[str, ...] = (
    f"""
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE events (
        idx BIGINT NOT NULL,
        data BYTEA NOT NULL,
        PRIMARY KEY (idx)
    ) PARTITION BY RANGE (idx);
    CREATE TABLE event_index (
        idx BIGINT NOT NULL,
        service TEXT {_C} NOT NULL,
        event_id TEXT {_C} NOT NULL,
        time TEXT {_C} NOT NULL,
        action TEXT {_C} NOT NULL,
        actor TEXT {_C} NOT NULL,
        principal TEXT {_C},
        resource TEXT {_C},
        trace_id TEXT {_C},
        environment TEXT {_C},
        outcome TEXT {_C} NOT NULL,
        PRIMARY KEY (idx)
    ) PARTITION BY RANGE (idx);
    CREATE INDEX event_index_source_id ON event_index (service, event_id);
    CREATE INDEX event_index_time ON event_index (time);
    CREATE INDEX event_index_action ON event_index (action);
    CREATE INDEX event_index_actor ON event_index (actor);
    CREATE INDEX event_index_principal ON event_index (principal);
    CREATE INDEX event_index_resource ON event_index (resource);
    CREATE INDEX event_index_trace ON event_index (trace_id);
    CREATE TABLE partitions (
        first_idx BIGINT PRIMARY KEY,
        end_idx BIGINT NOT NULL,
        created_at TIMESTAMPTZ NOT NULL DEFAULT now()
    );
    CREATE TABLE tiles (
        level INTEGER NOT NULL,
        idx BIGINT NOT NULL,
        hashes BYTEA NOT NULL,
        PRIMARY KEY (level, idx)
    );
    CREATE TABLE checkpoints (
        size BIGINT PRIMARY KEY,
        root BYTEA NOT NULL,
        note TEXT NOT NULL,
        created_at TEXT NOT NULL
    );
    CREATE TABLE tokens (
        token_id TEXT PRIMARY KEY,
        digest BYTEA NOT NULL UNIQUE,
        role TEXT NOT NULL,
        service TEXT,
        environment TEXT,
        description TEXT,
        created_at TEXT {_C} NOT NULL,
        expires_at TEXT,
        revoked_at TEXT
    );
    """,
    # The cluster: events acknowledged by any node, waiting for the leader; the log
    # head (the leader's fencing epoch); the nodes' heartbeats.
    f"""
    CREATE TABLE pending (
        seq BIGSERIAL PRIMARY KEY,
        service TEXT {_C} NOT NULL,
        event_id TEXT {_C} NOT NULL,
        fresh BOOLEAN NOT NULL,
        data BYTEA NOT NULL,
        leaf_hash BYTEA NOT NULL,
        time TEXT NOT NULL,
        action TEXT NOT NULL,
        actor TEXT NOT NULL,
        principal TEXT,
        resource TEXT,
        trace_id TEXT,
        environment TEXT,
        outcome TEXT NOT NULL,
        received_by TEXT,
        received_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        UNIQUE (service, event_id)
    );
    CREATE TABLE log_head (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        epoch BIGINT NOT NULL,
        leader TEXT,
        leader_since TIMESTAMPTZ,
        size BIGINT NOT NULL
    );
    INSERT INTO log_head (id, epoch, size) VALUES (1, 0, 0);
    CREATE TABLE nodes (
        node_id TEXT PRIMARY KEY,
        address TEXT,
        host TEXT,
        pid INTEGER,
        role TEXT NOT NULL,
        size BIGINT,
        started_at TIMESTAMPTZ NOT NULL,
        heartbeat_at TIMESTAMPTZ NOT NULL
    );
    """,
    # Detection alerts and the durable webhook outbox; federation: nodes enrolled at
    # this hub, witnesses' cosignatures of this log.
    f"""
    CREATE TABLE alerts (
        alert_id TEXT PRIMARY KEY,
        dedup_key TEXT NOT NULL UNIQUE,
        rule_id TEXT NOT NULL,
        title TEXT NOT NULL,
        level TEXT,
        grp JSONB NOT NULL,
        indexes JSONB NOT NULL,
        first_time TEXT,
        last_time TEXT,
        raised_at TEXT NOT NULL,
        log_index BIGINT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('open', 'acknowledged', 'closed')),
        notes JSONB NOT NULL,
        details JSONB NOT NULL,
        updated_at TEXT
    );
    CREATE INDEX alerts_log_index ON alerts (log_index);
    CREATE INDEX alerts_status ON alerts (status, log_index);
    CREATE INDEX alerts_rule ON alerts (rule_id, log_index);
    CREATE TABLE webhook_outbox (
        delivery_id TEXT {_C} PRIMARY KEY,
        alert_id TEXT NOT NULL REFERENCES alerts (alert_id),
        sink TEXT NOT NULL,
        payload BYTEA NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at DOUBLE PRECISION NOT NULL,
        last_error TEXT,
        delivered_at TEXT
    );
    CREATE INDEX webhook_outbox_due ON webhook_outbox (sink, next_attempt_at)
        WHERE delivered_at IS NULL;
    CREATE TABLE federation_nodes (
        name TEXT {_C} PRIMARY KEY,
        vkey TEXT NOT NULL,
        status TEXT NOT NULL,
        reason TEXT,
        position BIGINT NOT NULL,
        compact BYTEA NOT NULL,
        checkpoint TEXT,
        last_seen TEXT,
        enrolled_at TEXT NOT NULL,
        updated_at TEXT
    );
    CREATE TABLE cosignatures (
        size BIGINT NOT NULL,
        witness TEXT {_C} NOT NULL,
        line TEXT NOT NULL,
        created_at TEXT NOT NULL,
        PRIMARY KEY (size, witness)
    );
    """,
    # Partial indexes for the columns many events leave empty (as on SQLite): an index
    # entry for NULL costs an insert per event and serves no query (a query on these
    # columns always implies NOT NULL, so the planner still uses the partial index).
    """
    DROP INDEX event_index_principal;
    DROP INDEX event_index_resource;
    DROP INDEX event_index_trace;
    CREATE INDEX event_index_principal ON event_index (principal) WHERE principal IS NOT NULL;
    CREATE INDEX event_index_resource ON event_index (resource) WHERE resource IS NOT NULL;
    CREATE INDEX event_index_trace ON event_index (trace_id) WHERE trace_id IS NOT NULL;
    """,
)

_INDEX_COLUMNS = (
    "idx, service, event_id, time, action, actor, principal, resource, trace_id, environment, outcome"
)
_NODE_COLUMNS = (
    "name, vkey, status, reason, position, compact, checkpoint, last_seen, enrolled_at, updated_at"
)
_PENDING_COLUMNS = (
    "service, event_id, fresh, data, leaf_hash, time, action, actor, principal, resource,"
    " trace_id, environment, outcome"
)


def _alert_row(record: AlertRecord) -> tuple[object, ...]:
    r = record
    return (
        r.alert_id, r.dedup_key, r.rule_id, r.title, r.level, Jsonb(r.group), Jsonb(list(r.indexes)),
        r.first_time, r.last_time, r.raised_at, r.log_index, r.status, Jsonb(list(r.notes)),
        Jsonb(r.details), r.updated_at,
    )


def _alert_of(row: Sequence[Any]) -> AlertRecord:
    (alert_id, key, rule_id, title, level, group, indexes, first, last, raised, log_index,
     status, notes, details, updated) = row
    return AlertRecord(
        alert_id=alert_id, dedup_key=key, rule_id=rule_id, title=title, level=level,
        group=group, indexes=tuple(indexes), first_time=first, last_time=last,
        raised_at=raised, log_index=log_index, status=status, notes=tuple(notes),
        details=details, updated_at=updated,
    )


def _delivery_of(row: Sequence[Any]) -> DeliveryRecord:
    delivery_id, alert_id, sink, payload, attempts, next_at, error, delivered = row
    return DeliveryRecord(delivery_id, alert_id, sink, bytes(payload), attempts, next_at, error,
                          delivered)


def _node_of(row: Sequence[Any]) -> FederatedNodeRecord:
    name, key, status, reason, position, compact, checkpoint, seen, enrolled, updated = row
    return FederatedNodeRecord(name, key, status, reason, position, bytes(compact), checkpoint,
                               seen, enrolled, updated)


class LostLeadership(StoreError):
    """The log head's epoch moved on: another node leads now; this one must stop writing."""

    status = 503
    title = "Service unavailable"


def redact_url(url: str) -> str:
    """The URL without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


def _split_options(url: str) -> tuple[str, dict[str, str]]:
    """Remove auditfed's own ``auditfed_*`` query parameters (libpq would refuse them)."""
    parts = urlsplit(url)
    params = parse_qsl(parts.query, keep_blank_values=True)
    ours = {k.removeprefix("auditfed_"): v for k, v in params if k.startswith("auditfed_")}
    theirs = [(k, v) for k, v in params if not k.startswith("auditfed_")]
    return urlunsplit(parts._replace(query=urlencode(theirs))), ours


def _unavailable(exc: BaseException) -> Unavailable:
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return Unavailable(f"the database is unavailable: {message}")


@contextmanager
def _errors(what: str) -> Iterator[None]:
    """Database errors as auditfed errors: connection trouble 503, the rest 500."""
    try:
        yield
    except (psycopg.OperationalError, PoolTimeout) as exc:
        raise _unavailable(exc) from exc
    except psycopg.Error as exc:
        raise StoreError(f"PostgreSQL {what} failed: {exc}") from exc


class _PGWrite(WriteTransaction, IndexTransaction):
    def __init__(self, store: PostgresStore, conn: psycopg.Connection) -> None:
        self.store = store
        self.conn = conn

    # --- the interface ---
    def existing_indexes(self, rows: Sequence[EntryRow]) -> dict[tuple[str, str], int]:
        if not rows:
            return {}
        found = self.conn.execute(
            "SELECT i.service, i.event_id, i.idx FROM event_index AS i"
            " JOIN unnest(%s::text[], %s::text[]) AS k(service, event_id)"
            " ON i.service = k.service AND i.event_id = k.event_id",
            ([r.service for r in rows], [r.event_id for r in rows]),
        ).fetchall()
        return {(service, event_id): idx for service, event_id, idx in found}

    def append_entries(self, first_index: int, rows: Sequence[EntryRow]) -> None:
        if not rows:
            return
        self.store._ensure_partitions(first_index + len(rows), self.conn)
        with self.conn.cursor().copy("COPY events (idx, data) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(["int8", "bytea"])
            for offset, row in enumerate(rows):
                copy.write_row((first_index + offset, row.data))

    def index_entries(self, first_index: int, rows: Sequence[EntryRow]) -> None:
        if rows:
            self.store._ensure_partitions(first_index + len(rows), self.conn)
            with self.conn.cursor().copy(
                f"COPY event_index ({_INDEX_COLUMNS}) FROM STDIN (FORMAT BINARY)"
            ) as copy:
                copy.set_types(["int8", *["text"] * 10])
                for offset, r in enumerate(rows):
                    copy.write_row((first_index + offset, r.service, r.event_id, r.time, r.action,
                                    r.actor, r.principal, r.resource, r.trace_id, r.environment,
                                    r.outcome))
        self.conn.execute(
            "INSERT INTO meta (key, value) VALUES ('indexed_size', %s)"
            " ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
            (str(first_index + len(rows)),),
        )

    def put_tiles(self, tiles: Mapping[tuple[int, int], bytes]) -> None:
        if not tiles:
            return
        levels, indexes, blobs = [], [], []
        for (level, index), data in tiles.items():
            levels.append(level)
            indexes.append(index)
            blobs.append(data)
        self.conn.execute(
            "INSERT INTO tiles (level, idx, hashes)"
            " SELECT * FROM unnest(%s::int[], %s::int8[], %s::bytea[])"
            " ON CONFLICT (level, idx) DO UPDATE SET hashes = EXCLUDED.hashes",
            (levels, indexes, blobs),
        )

    def add_checkpoint(self, checkpoint: CheckpointRecord) -> None:
        cp = checkpoint
        self.conn.execute(
            "INSERT INTO checkpoints (size, root, note, created_at) VALUES (%s, %s, %s, %s)",
            (cp.size, cp.root, cp.note, cp.created_at),
        )

    # --- the cluster's leader ---
    def fence(self, epoch: int, leader: str | None = None) -> None:
        """Continue only while ``epoch`` is the log head's (locks the head row until commit)."""
        row = self.conn.execute(
            "UPDATE log_head SET size = size WHERE id = 1 AND epoch = %s RETURNING epoch", (epoch,)
        ).fetchone()
        if row is None:
            raise LostLeadership(f"leadership epoch {epoch} is over: another node leads the log")

    def set_head_size(self, size: int) -> None:
        self.conn.execute("UPDATE log_head SET size = %s WHERE id = 1", (size,))

    def take_pending(
        self, limit: int, keys: Sequence[tuple[str, str]] = ()
    ) -> list[tuple[int, bool, EntryRow]]:
        """Remove (in this transaction) the oldest pending events, and any with ``keys``.

        Returns ``(seq, fresh, row)`` in the order they were acknowledged.
        """
        taken = self.conn.execute(
            f"DELETE FROM pending WHERE seq IN (SELECT seq FROM pending ORDER BY seq LIMIT %s)"
            f" RETURNING seq, {_PENDING_COLUMNS}",
            (limit,),
        ).fetchall()
        if keys and len(taken) == limit:
            taken += self.conn.execute(
                f"DELETE FROM pending AS p USING unnest(%s::text[], %s::text[]) AS k(service, event_id)"
                f" WHERE p.service = k.service AND p.event_id = k.event_id"
                f" RETURNING p.seq, {', '.join('p.' + c.strip() for c in _PENDING_COLUMNS.split(','))}",
                ([k[0] for k in keys], [k[1] for k in keys]),
            ).fetchall()
        taken.sort(key=lambda r: r[0])
        return [
            (seq, fresh, EntryRow(data, leaf, service, event_id, t, action, actor, principal,
                                  resource, trace_id, environment, outcome))
            for (seq, service, event_id, fresh, data, leaf, t, action, actor, principal, resource,
                 trace_id, environment, outcome) in taken
        ]

    # --- any node ---
    def add_pending(
        self, rows: Sequence[tuple[bool, EntryRow]], received_by: str | None
    ) -> set[tuple[str, str]]:
        """Queue events for the leader; the keys that were new (others were pending already)."""
        if not rows:
            return set()
        columns: list[list[Any]] = [[] for _ in range(13)]
        for fresh, r in rows:
            for column, value in zip(columns, (
                r.service, r.event_id, fresh, r.data, r.leaf_hash, r.time, r.action, r.actor,
                r.principal, r.resource, r.trace_id, r.environment, r.outcome,
            ), strict=True):
                column.append(value)
        types = ("text", "text", "bool", "bytea", "bytea", "text", "text", "text", "text",
                 "text", "text", "text", "text")
        unnest = ", ".join(f"%s::{t}[]" for t in types)
        inserted = self.conn.execute(
            f"INSERT INTO pending ({_PENDING_COLUMNS}, received_by)"
            f" SELECT u.*, %s::text FROM unnest({unnest}) AS u"
            f" ON CONFLICT (service, event_id) DO NOTHING RETURNING service, event_id",
            (received_by, *columns),
        )
        return {(service, event_id) for service, event_id in inserted.fetchall()}


class PostgresStore(Store):
    def __init__(self, url: str, *, pool_size: int = 8, connect_timeout: float = 5.0,
                 pool_timeout: float = 2.0) -> None:
        self.url = url
        conninfo, options = _split_options(url)
        self._conninfo = conninfo
        self._connect_timeout = connect_timeout
        self._partition_size = int(options.get("partition_size", DEFAULT_PARTITION_SIZE))
        self._partitions_lock = threading.Lock()
        self._partition_end = 0
        self._check_server_and_migrate()
        self._pool = ConnectionPool(
            conninfo,
            min_size=1,
            max_size=pool_size,
            kwargs={"autocommit": True, "connect_timeout": int(max(1, connect_timeout))},
            check=ConnectionPool.check_connection,
            timeout=pool_timeout,  # no connection within this: 503, the client retries
            reconnect_timeout=24 * 3600,
            open=False,
            name="auditfed",
        )
        self._pool.open(wait=False)

    # --- start-up ---
    def _check_server_and_migrate(self) -> None:
        try:
            conn = psycopg.connect(
                self._conninfo, autocommit=True, connect_timeout=int(max(1, self._connect_timeout))
            )
        except psycopg.OperationalError as exc:
            detail = " ".join(str(exc).split())
            raise ConfigError(
                f"cannot connect to the PostgreSQL store {redact_url(self.url)}: {detail}"
            ) from None
        except psycopg.ProgrammingError as exc:
            raise ConfigError(f"invalid PostgreSQL store URL {redact_url(self.url)}: {exc}") from None
        try:
            with conn:
                self._migrate(conn)
                self._warn_unsafe_settings(conn)
                value = conn.execute("SELECT value FROM meta WHERE key = 'partition_size'").fetchone()
                self._partition_size = int(value[0])
                (end,) = conn.execute("SELECT COALESCE(MAX(end_idx), 0) FROM partitions").fetchone()
                self._partition_end = end
        except psycopg.Error as exc:
            raise StoreError(f"cannot prepare the PostgreSQL store {redact_url(self.url)}: {exc}") from None

    def _migrate(self, conn: psycopg.Connection) -> None:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = conn.execute("SELECT version FROM schema_version").fetchone()
            version = row[0] if row else 0
            if row is None:
                conn.execute("INSERT INTO schema_version (version) VALUES (0)")
            if version > len(MIGRATIONS):
                raise ConfigError(
                    f"the PostgreSQL store is at schema version {version}, newer than this "
                    f"auditfed ({len(MIGRATIONS)}): upgrade auditfed"
                )
            for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
                conn.execute(script)  # type: ignore[arg-type]
                if number == 1:
                    conn.execute(
                        "INSERT INTO meta (key, value) VALUES ('partition_size', %s)",
                        (str(self._partition_size),),
                    )
                    self._create_partition(conn, 0, self._partition_size)
                conn.execute("UPDATE schema_version SET version = %s", (number,))

    @staticmethod
    def _warn_unsafe_settings(conn: psycopg.Connection) -> None:
        unsafe = []
        for name, good in (("fsync", "on"), ("full_page_writes", "on")):
            (value,) = conn.execute(f"SHOW {name}").fetchone()  # type: ignore[misc]
            if value != good:
                unsafe.append(f"{name}={value}")
        (commit,) = conn.execute("SHOW synchronous_commit").fetchone()  # type: ignore[misc]
        if commit in ("off", "local"):
            unsafe.append(f"synchronous_commit={commit}")
        if unsafe:
            log.warning(
                "PostgreSQL is configured so that acknowledged events may be lost on a crash",
                extra={"settings": ", ".join(unsafe)},
            )

    # --- partitions ---
    def _create_partition(self, conn: psycopg.Connection, first: int, end: int) -> None:
        suffix = f"{first:015d}"
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS events_p{suffix} PARTITION OF events"
            f" FOR VALUES FROM ({first}) TO ({end})"
        )
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS event_index_p{suffix} PARTITION OF event_index"
            f" FOR VALUES FROM ({first}) TO ({end})"
        )
        conn.execute(
            "INSERT INTO partitions (first_idx, end_idx) VALUES (%s, %s) ON CONFLICT DO NOTHING",
            (first, end),
        )

    def _ensure_partitions(self, upto: int, conn: psycopg.Connection | None = None) -> None:
        """Partitions for every index below ``upto`` plus one ahead once half full.

        With ``conn`` (inside the sequencer's transaction) only what is needed now is
        created there; ahead-of-time partitions are made by :meth:`prepare_partitions`.
        """
        with self._partitions_lock:
            if upto <= self._partition_end:
                return
            size = self._partition_size
            if conn is None:
                with self._pool.connection() as own:
                    self._create_up_to(own, upto, size)
            else:
                self._create_up_to(conn, upto, size)

    def _create_up_to(self, conn: psycopg.Connection, upto: int, size: int) -> None:
        (end,) = conn.execute("SELECT COALESCE(MAX(end_idx), 0) FROM partitions").fetchone()  # type: ignore[misc]
        while end < upto:
            self._create_partition(conn, end, end + size)
            end += size
        self._partition_end = end

    def prepare_partitions(self, size: int) -> None:
        """Create the next partition ahead of need once the log is half-way through the last."""
        if size + self._partition_size // 2 > self._partition_end:
            with _errors("creating a partition"):
                self._ensure_partitions(size + self._partition_size // 2 + 1)

    def partitions(self) -> list[tuple[int, int]]:
        with self._read() as conn:
            return conn.execute("SELECT first_idx, end_idx FROM partitions ORDER BY first_idx").fetchall()

    def prune_before(self, index: int) -> int:
        """Retention: drop the partitions entirely below ``index`` (entries and index
        rows), in one transaction with the new ``retained_from``."""
        index = min(index, self.size() - 1)
        dropped = []
        with self._read() as conn, conn.transaction():
            for first, end in conn.execute(
                "SELECT first_idx, end_idx FROM partitions WHERE end_idx <= %s ORDER BY first_idx",
                (index,),
            ).fetchall():
                suffix = f"{first:015d}"
                conn.execute(f"DROP TABLE IF EXISTS events_p{suffix}")
                conn.execute(f"DROP TABLE IF EXISTS event_index_p{suffix}")
                conn.execute("DELETE FROM partitions WHERE first_idx = %s", (first,))
                dropped.append((first, end))
            if dropped:
                conn.execute(
                    "INSERT INTO meta (key, value) VALUES ('retained_from', %s)"
                    " ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                    (str(dropped[-1][1]),),
                )
        return self.retained_from()

    # --- connections ---
    @contextmanager
    def _read(self) -> Iterator[psycopg.Connection]:
        with _errors("read"), self._pool.connection() as conn:
            yield conn

    def _one(self, sql: str, params: Sequence[Any] = ()) -> Any:
        with self._read() as conn:
            return conn.execute(sql, params).fetchone()  # type: ignore[arg-type]

    def _all(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        with self._read() as conn:
            return conn.execute(sql, params).fetchall()  # type: ignore[arg-type]

    # --- writing ---
    @contextmanager
    def transaction(self, *, durable: bool = False) -> Iterator[_PGWrite]:
        # Every commit is durable (synchronous_commit=on): ``durable`` changes nothing.
        with _errors("write"), self._pool.connection() as conn, conn.transaction():
            yield _PGWrite(self, conn)

    # --- the log ---
    def size(self) -> int:
        (last,) = self._one("SELECT MAX(idx) FROM events")
        return 0 if last is None else last + 1

    def read_tiles(self, keys: Sequence[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
        if not keys:
            return {}
        rows = self._all(
            "SELECT t.level, t.idx, t.hashes FROM tiles AS t"
            " JOIN unnest(%s::int[], %s::int8[]) AS k(level, idx) ON t.level = k.level AND t.idx = k.idx",
            ([k[0] for k in keys], [k[1] for k in keys]),
        )
        return {(level, index): bytes(data) for level, index, data in rows}

    def iter_tiles(self, level: int) -> Iterator[tuple[int, bytes]]:
        after = -1
        while True:
            rows = self._all(
                "SELECT idx, hashes FROM tiles WHERE level = %s AND idx > %s ORDER BY idx LIMIT 2000",
                (level, after),
            )
            for index, data in rows:
                yield index, bytes(data)
            if len(rows) < 2000:
                return
            after = rows[-1][0]

    def entries(self, start: int, end: int) -> list[tuple[int, bytes]]:
        rows = self._all(
            "SELECT idx, data FROM events WHERE idx >= %s AND idx < %s ORDER BY idx", (start, end)
        )
        return [(index, bytes(data)) for index, data in rows]

    def iter_entries(self, start: int = 0, chunk: int = 10_000) -> Iterator[tuple[int, bytes]]:
        position = start
        while True:
            rows = self._all(
                "SELECT idx, data FROM events WHERE idx >= %s ORDER BY idx LIMIT %s", (position, chunk)
            )
            for index, data in rows:
                yield index, bytes(data)
            if len(rows) < chunk:
                return
            position = rows[-1][0] + 1

    def indexed_size(self) -> int:
        value = self.get_meta("indexed_size")
        return int(value) if value else 0

    # --- checkpoints ---
    def latest_checkpoint(self) -> CheckpointRecord | None:
        return self._checkpoint("ORDER BY size DESC LIMIT 1", ())

    def checkpoint_at_least(self, size: int) -> CheckpointRecord | None:
        return self._checkpoint("WHERE size >= %s ORDER BY size LIMIT 1", (size,))

    def checkpoints(self) -> list[CheckpointRecord]:
        rows = self._all("SELECT size, root, note, created_at FROM checkpoints ORDER BY size")
        return [CheckpointRecord(size, bytes(root), note, at) for size, root, note, at in rows]

    def _checkpoint(self, clause: str, params: tuple[int, ...]) -> CheckpointRecord | None:
        row = self._one(f"SELECT size, root, note, created_at FROM checkpoints {clause}", params)
        return None if row is None else CheckpointRecord(row[0], bytes(row[1]), row[2], row[3])

    # --- queries ---
    def search(self, query: Query) -> list[tuple[int, bytes]]:
        return [(index, bytes(data)) for index, data in self._search(query, "e.data")]

    def search_sizes(self, query: Query) -> list[tuple[int, int]]:
        # octet_length() of a TOASTed value reads its stored size, not the value.
        return self._search(query, "octet_length(e.data)")

    def entry_sizes(self, start: int, end: int) -> list[tuple[int, int]]:
        return self._all(
            "SELECT idx, octet_length(data) FROM events WHERE idx >= %s AND idx < %s ORDER BY idx", (start, end)
        )

    def _search(self, query: Query, column: str) -> list[tuple[int, Any]]:
        where, params = compile_where(query.expr, POSTGRES, table="i")
        args: list[object] = list(params)
        if query.after is not None:
            where += " AND i.idx < %s" if query.newest_first else " AND i.idx > %s"
            args.append(query.after)
        order = "DESC" if query.newest_first else "ASC"
        args.append(query.limit)
        return self._all(
            f"SELECT i.idx, {column} FROM event_index AS i JOIN events AS e ON e.idx = i.idx"
            f" WHERE {where} ORDER BY i.idx {order} LIMIT %s",
            args,
        )

    # --- metadata and tokens ---
    def get_meta(self, key: str) -> str | None:
        row = self._one("SELECT value FROM meta WHERE key = %s", (key,))
        return None if row is None else row[0]

    def set_meta(self, key: str, value: str) -> None:
        self._write(
            "INSERT INTO meta (key, value) VALUES (%s, %s)"
            " ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
            (key, value),
        )

    def claim_meta(self, key: str, value: str) -> str:
        """Set ``key`` unless it is set; return the stored value (first writer wins)."""
        self._write(
            "INSERT INTO meta (key, value) VALUES (%s, %s) ON CONFLICT (key) DO NOTHING", (key, value)
        )
        stored = self.get_meta(key)
        assert stored is not None
        return stored

    def add_token(self, digest: bytes, record: TokenRecord) -> None:
        self._write(
            f"INSERT INTO tokens (digest, {TOKEN_COLUMNS}) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s)",
            (digest, record.token_id, record.role, record.service, record.environment,
             record.description, record.created_at, record.expires_at, record.revoked_at),
        )

    def find_token(self, digest: bytes) -> TokenRecord | None:
        row = self._one(f"SELECT {TOKEN_COLUMNS} FROM tokens WHERE digest = %s", (digest,))
        return None if row is None else TokenRecord(*row)

    def list_tokens(self) -> list[TokenRecord]:
        rows = self._all(f"SELECT {TOKEN_COLUMNS} FROM tokens ORDER BY created_at")
        return [TokenRecord(*row) for row in rows]

    def revoke_token(self, token_id: str, when: str) -> bool:
        changed = self._write(
            "UPDATE tokens SET revoked_at = %s WHERE token_id = %s AND revoked_at IS NULL",
            (when, token_id),
        )
        return changed > 0

    # --- records handed to the log's writer: the cluster's own queue, drained by the leader ---
    def hand_over(self, rows: Sequence[EntryRow], received_by: str) -> None:
        with self.transaction() as tx:
            tx.add_pending([(False, row) for row in rows], received_by)

    def is_handed_over(self, service: str, event_id: str) -> bool:
        return self.lookup_pending(service, event_id)

    def _write(self, sql: str, params: Sequence[Any]) -> int:
        with _errors("write"), self._pool.connection() as conn:
            return conn.execute(sql, params).rowcount  # type: ignore[arg-type]

    # --- alerts ---
    def add_alerts(
        self, alerts: Sequence[AlertRecord], deliveries: Sequence[DeliveryRecord]
    ) -> list[str]:
        stored: list[str] = []
        with _errors("write"), self._pool.connection() as conn, conn.transaction():
            for alert in alerts:
                cursor = conn.execute(
                    f"INSERT INTO alerts ({ALERT_COLUMNS}) VALUES"
                    " (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s) ON CONFLICT DO NOTHING",
                    _alert_row(alert),
                )
                if cursor.rowcount:
                    stored.append(alert.alert_id)
            kept = set(stored)
            rows = [
                (d.delivery_id, d.alert_id, d.sink, d.payload, d.attempts, d.next_attempt_at,
                 d.last_error, d.delivered_at)
                for d in deliveries if d.alert_id in kept
            ]
            if rows:
                conn.cursor().executemany(
                    f"INSERT INTO webhook_outbox ({DELIVERY_COLUMNS}) VALUES (%s,%s,%s,%s,%s,%s,%s,%s)",
                    rows,
                )
        return stored

    def stored_alert_keys(self, keys: Sequence[str]) -> set[str]:
        if not keys:
            return set()
        rows = self._all("SELECT dedup_key FROM alerts WHERE dedup_key = ANY(%s)", (list(set(keys)),))
        return {row[0] for row in rows}

    def get_alert(self, alert_id: str) -> AlertRecord | None:
        row = self._one(f"SELECT {ALERT_COLUMNS} FROM alerts WHERE alert_id = %s", (alert_id,))
        return None if row is None else _alert_of(row)

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
        sql, args = alert_listing(
            "%s", status=status, rule_id=rule_id, level=level, before=before, after=after, limit=limit
        )
        rows = self._all(sql, args)
        return [_alert_of(row) for row in rows]

    def update_alert(
        self,
        alert_id: str,
        *,
        expected: Sequence[str],
        status: str,
        note: dict[str, Any],
        updated_at: str,
    ) -> AlertRecord | None:
        with _errors("write"), self._pool.connection() as conn, conn.transaction():
            row = conn.execute(
                f"UPDATE alerts SET status = %s, notes = notes || %s, updated_at = %s"
                f" WHERE alert_id = %s AND status = ANY(%s) RETURNING {ALERT_COLUMNS}",
                (status, Jsonb([note]), updated_at, alert_id, list(expected)),
            ).fetchone()
        return None if row is None else _alert_of(row)

    def pending_deliveries(
        self, sink: str, *, due_before: float, limit: int = 100
    ) -> list[DeliveryRecord]:
        rows = self._all(
            f"SELECT {DELIVERY_COLUMNS} FROM webhook_outbox"
            " WHERE sink = %s AND delivered_at IS NULL AND next_attempt_at <= %s"
            " ORDER BY next_attempt_at, delivery_id LIMIT %s",
            (sink, due_before, limit),
        )
        return [_delivery_of(row) for row in rows]

    def finish_delivery(
        self,
        delivery_id: str,
        *,
        attempts: int,
        next_attempt_at: float,
        error: str | None,
        delivered_at: str | None,
    ) -> None:
        self._write(
            "UPDATE webhook_outbox SET attempts = %s, next_attempt_at = %s, last_error = %s,"
            " delivered_at = %s WHERE delivery_id = %s",
            (attempts, next_attempt_at, error, delivered_at, delivery_id),
        )

    # --- federation ---
    def federation_nodes(self) -> list[FederatedNodeRecord]:
        return [_node_of(row) for row in self._all(
            f"SELECT {_NODE_COLUMNS} FROM federation_nodes ORDER BY name")]

    def get_federation_node(self, name: str) -> FederatedNodeRecord | None:
        row = self._one(f"SELECT {_NODE_COLUMNS} FROM federation_nodes WHERE name = %s", (name,))
        return None if row is None else _node_of(row)

    def advance_federation_node(self, name: str, expected_position: int, position: int,
                                compact: bytes, checkpoint: str, seen: str) -> bool:
        return self._write(*advance_node("%s", name, expected_position, position, compact,
                                         checkpoint, seen)) == 1

    def put_federation_node(self, record: FederatedNodeRecord) -> None:
        r = record
        self._write(
            f"INSERT INTO federation_nodes ({_NODE_COLUMNS}) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)"
            " ON CONFLICT (name) DO UPDATE SET vkey = EXCLUDED.vkey, status = EXCLUDED.status,"
            " reason = EXCLUDED.reason, position = EXCLUDED.position, compact = EXCLUDED.compact,"
            " checkpoint = EXCLUDED.checkpoint, last_seen = EXCLUDED.last_seen,"
            " enrolled_at = EXCLUDED.enrolled_at, updated_at = EXCLUDED.updated_at",
            (r.name, r.key, r.status, r.reason, r.position, r.compact, r.checkpoint,
             r.last_seen, r.enrolled_at, r.updated_at),
        )

    def add_cosignature(self, size: int, witness: str, line: str, created_at: str) -> None:
        self._write(
            "INSERT INTO cosignatures (size, witness, line, created_at) VALUES (%s, %s, %s, %s)"
            " ON CONFLICT (size, witness) DO UPDATE SET line = EXCLUDED.line,"
            " created_at = EXCLUDED.created_at",
            (size, witness, line, created_at),
        )

    def cosignatures(self, size: int) -> list[str]:
        rows = self._all("SELECT line FROM cosignatures WHERE size = %s ORDER BY witness", (size,))
        return [row[0] for row in rows]

    def latest_cosigned_size(self) -> int | None:
        return self._one("SELECT MAX(size) FROM cosignatures")[0]

    # --- the cluster ---
    def lock_connection(self) -> psycopg.Connection:
        """A dedicated connection (outside the pool) for the leader's advisory lock."""
        with _errors("connect"):
            return psycopg.connect(
                self._conninfo, autocommit=True, connect_timeout=int(max(1, self._connect_timeout)),
                application_name="auditfed-leader-lock",
            )

    def begin_epoch(self, leader: str) -> int:
        """A new leadership epoch (fences off every earlier leader's writes)."""
        with _errors("write"), self._pool.connection() as conn:
            row = conn.execute(
                "UPDATE log_head SET epoch = epoch + 1, leader = %s, leader_since = now()"
                " WHERE id = 1 RETURNING epoch",
                (leader,),
            ).fetchone()
        assert row is not None
        return int(row[0])

    def lookup_pending(self, service: str, event_id: str) -> bool:
        return self._one(
            "SELECT 1 FROM pending WHERE service = %s AND event_id = %s", (service, event_id)
        ) is not None

    def has_pending(self) -> bool:
        return self._one("SELECT EXISTS (SELECT 1 FROM pending)")[0]

    def heartbeat(self, node_id: str, address: str, host: str, pid: int, role: str, size: int,
                  started_at: datetime) -> None:
        self._write(
            "INSERT INTO nodes (node_id, address, host, pid, role, size, started_at, heartbeat_at)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, now())"
            " ON CONFLICT (node_id) DO UPDATE SET address = EXCLUDED.address, host = EXCLUDED.host,"
            " pid = EXCLUDED.pid, role = EXCLUDED.role, size = EXCLUDED.size,"
            " started_at = EXCLUDED.started_at, heartbeat_at = now()",
            (node_id, address, host, pid, role, size, started_at),
        )

    def forget_node(self, node_id: str) -> None:
        self._write("DELETE FROM nodes WHERE node_id = %s", (node_id,))

    def cluster_status(self, stale_after: float = 10.0) -> dict[str, Any]:
        """The leader, the queue of unsequenced events and every node, from the database."""
        with self._read() as conn:
            epoch, leader, since, _size = conn.execute(
                "SELECT epoch, leader, leader_since, size FROM log_head WHERE id = 1"
            ).fetchone()  # type: ignore[misc]
            (locked,) = conn.execute(
                "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted"
                " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
                " AND ((classid::int8 << 32) | objid::int8) = %s)",
                (LEADER_LOCK,),
            ).fetchone()  # type: ignore[misc]
            pending, oldest = conn.execute(
                "SELECT count(*), EXTRACT(EPOCH FROM now() - MIN(received_at)) FROM pending"
            ).fetchone()  # type: ignore[misc]
            nodes = conn.execute(
                "SELECT node_id, address, host, pid, role, size, started_at, heartbeat_at,"
                " EXTRACT(EPOCH FROM now() - heartbeat_at) FROM nodes ORDER BY node_id"
            ).fetchall()
        size = self.size()
        latest = self.latest_checkpoint()
        return {
            "store": "postgresql",
            "leader": leader if locked else None,
            "leader_epoch": epoch,
            "leader_since": since.isoformat() if since and locked else None,
            "size": size,
            "indexed_size": self.indexed_size(),
            "checkpoint": latest.size if latest else None,
            "pending": pending,
            "oldest_pending_seconds": round(float(oldest), 3) if oldest is not None else None,
            "nodes": [
                {"node": node_id, "address": address, "host": host, "pid": pid,
                 "role": role if age <= stale_after else "down", "size": node_size,
                 "started_at": started.isoformat(), "heartbeat_at": beat.isoformat(),
                 "heartbeat_age_seconds": round(float(age), 3)}
                for node_id, address, host, pid, role, node_size, started, beat, age in nodes
            ],
        }

    def close(self) -> None:
        self._pool.close()


def wait_for_database(url: str, timeout: float) -> None:
    """Wait until ``url`` accepts connections (used by tools and tests)."""
    conninfo, _ = _split_options(url)
    deadline = time.monotonic() + timeout
    while True:
        try:
            psycopg.connect(conninfo, connect_timeout=2).close()
            return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
