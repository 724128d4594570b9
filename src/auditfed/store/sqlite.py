"""The embedded store: one SQLite file in WAL mode.

Durability: every commit is written to the WAL before the sequencer acknowledges it,
so acknowledged events survive a crash of the process. With ``fsync=True`` (the
default, ``synchronous=FULL``) each commit is also fsynced and survives power loss;
with ``fsync=False`` (``synchronous=NORMAL``) the last commits before a power loss may
be lost, but never a checkpoint: checkpoint commits are always fsynced, and an fsync
of the WAL makes every earlier commit durable too. So a signed checkpoint never
covers entries that could vanish, and the log never signs two inconsistent
checkpoints, across restarts and power loss.

Concurrency: one writer connection, used only by the sequencer thread; one reader
connection per thread. WAL lets readers see the last commit while the writer works.
Other processes (``auditfed token create``) may write too; ``busy_timeout`` makes
them wait their turn.

The query index lives in a second file beside the log (``<name>.index.db``), with
its own writer connection: SQLite has one write lock per file, so index writes
(random-key B-tree inserts, the most expensive writes the store makes) run
concurrently with log commits instead of between them. Reader connections attach
it, so queries join ``event_index`` with ``events`` as if they were one database.
The index is derived from the log and not fsynced: after a power loss it may
trail, and the sequencer re-indexes the tail from the log at start.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson

from auditfed.errors import StoreError
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
from auditfed.store.filters import SQLITE, Query, compile_where, index_key
from auditfed.store.sql import (
    ALERT_COLUMNS,
    DELIVERY_COLUMNS,
    TOKEN_COLUMNS,
    advance_node,
    alert_listing,
)

log = logging.getLogger(__name__)

#: Entries deleted per transaction by retention.
PRUNE_CHUNK = 20_000

#: Schema migrations, applied in order; ``PRAGMA user_version`` holds how many ran.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE events (
        idx INTEGER PRIMARY KEY,
        data BLOB NOT NULL
    );
    CREATE TABLE event_index (
        idx INTEGER PRIMARY KEY,
        service TEXT NOT NULL,
        event_id TEXT NOT NULL,
        time TEXT NOT NULL,
        action TEXT NOT NULL,
        actor TEXT NOT NULL,
        principal TEXT,
        resource TEXT,
        trace_id TEXT,
        environment TEXT,
        outcome TEXT NOT NULL
    );
    CREATE UNIQUE INDEX event_index_source_id ON event_index (service, event_id);
    CREATE INDEX event_index_time ON event_index (time);
    CREATE INDEX event_index_action ON event_index (action);
    CREATE INDEX event_index_actor ON event_index (actor);
    CREATE INDEX event_index_principal ON event_index (principal);
    CREATE INDEX event_index_resource ON event_index (resource);
    CREATE INDEX event_index_trace ON event_index (trace_id);
    CREATE TABLE tiles (
        level INTEGER NOT NULL,
        idx INTEGER NOT NULL,
        hashes BLOB NOT NULL,
        PRIMARY KEY (level, idx)
    ) WITHOUT ROWID;
    CREATE TABLE checkpoints (
        size INTEGER PRIMARY KEY,
        root BLOB NOT NULL,
        note TEXT NOT NULL,
        created_at TEXT NOT NULL
    );
    CREATE TABLE tokens (
        token_id TEXT PRIMARY KEY,
        digest BLOB NOT NULL UNIQUE,
        role TEXT NOT NULL,
        service TEXT,
        environment TEXT,
        description TEXT,
        created_at TEXT NOT NULL,
        expires_at TEXT,
        revoked_at TEXT
    );
    """,
    # 2: detection alerts and the durable webhook outbox.
    """
    CREATE TABLE alerts (
        alert_id TEXT PRIMARY KEY,
        dedup_key TEXT NOT NULL UNIQUE,
        rule_id TEXT NOT NULL,
        title TEXT NOT NULL,
        level TEXT,
        grp TEXT NOT NULL,
        indexes TEXT NOT NULL,
        first_time TEXT,
        last_time TEXT,
        raised_at TEXT NOT NULL,
        log_index INTEGER NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('open', 'acknowledged', 'closed')),
        notes TEXT NOT NULL,
        details TEXT NOT NULL,
        updated_at TEXT
    );
    CREATE INDEX alerts_log_index ON alerts (log_index);
    CREATE INDEX alerts_status ON alerts (status, log_index);
    CREATE INDEX alerts_rule ON alerts (rule_id, log_index);
    CREATE TABLE webhook_outbox (
        delivery_id TEXT PRIMARY KEY,
        alert_id TEXT NOT NULL REFERENCES alerts (alert_id),
        sink TEXT NOT NULL,
        payload BLOB NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL NOT NULL,
        last_error TEXT,
        delivered_at TEXT
    );
    CREATE INDEX webhook_outbox_due ON webhook_outbox (sink, next_attempt_at)
        WHERE delivered_at IS NULL;
    """,
    # federation: nodes enrolled at this hub; witnesses' cosignatures of this log.
    """
    CREATE TABLE federation_nodes (
        name TEXT PRIMARY KEY,
        vkey TEXT NOT NULL,
        status TEXT NOT NULL,
        reason TEXT,
        position INTEGER NOT NULL,
        compact BLOB NOT NULL,
        checkpoint TEXT,
        last_seen TEXT,
        enrolled_at TEXT NOT NULL,
        updated_at TEXT
    );
    CREATE TABLE cosignatures (
        size INTEGER NOT NULL,
        witness TEXT NOT NULL,
        line TEXT NOT NULL,
        created_at TEXT NOT NULL,
        PRIMARY KEY (size, witness)
    );
    """,
    # The query index moved to its own file (INDEX_MIGRATIONS); it is rebuilt there
    # from the log.
    """
    DROP TABLE event_index;
    DELETE FROM meta WHERE key = 'indexed_size';
    """,
    # Records of administrative acts a CLI made on the data dir while a server ran,
    # waiting for that server (the log's single writer) to append them.
    """
    CREATE TABLE handed_over (
        service TEXT NOT NULL,
        event_id TEXT NOT NULL,
        data BLOB NOT NULL,
        received_by TEXT,
        PRIMARY KEY (service, event_id)
    );
    """,
)

#: Schema of the query index file (its own ``PRAGMA user_version``).
INDEX_MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE index_state (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE event_index (
        idx INTEGER PRIMARY KEY,
        service TEXT NOT NULL,
        event_id TEXT NOT NULL,
        time TEXT NOT NULL,
        action TEXT NOT NULL,
        actor TEXT NOT NULL,
        principal TEXT,
        resource TEXT,
        trace_id TEXT,
        environment TEXT,
        outcome TEXT NOT NULL
    );
    CREATE UNIQUE INDEX event_index_source_id ON event_index (service, event_id);
    CREATE INDEX event_index_time ON event_index (time);
    CREATE INDEX event_index_action ON event_index (action);
    CREATE INDEX event_index_actor ON event_index (actor);
    -- Partial: many events have no principal, resource or trace, and an index entry
    -- for NULL would cost an insert per event for nothing (queries on these columns
    -- always imply NOT NULL, so the planner still uses them).
    CREATE INDEX event_index_principal ON event_index (principal) WHERE principal IS NOT NULL;
    CREATE INDEX event_index_resource ON event_index (resource) WHERE resource IS NOT NULL;
    CREATE INDEX event_index_trace ON event_index (trace_id) WHERE trace_id IS NOT NULL;
    """,
    # Event ids and trace ids are indexed by their 64-bit index_key, not their text:
    # entries several times smaller, so each commit rewrites fewer index pages. The
    # index is emptied and rebuilt from the log at the next start.
    """
    DROP INDEX event_index_source_id;
    DROP INDEX event_index_trace;
    DELETE FROM event_index;
    DELETE FROM index_state WHERE key = 'indexed_size';
    ALTER TABLE event_index ADD COLUMN id_key INTEGER;
    ALTER TABLE event_index ADD COLUMN trace_key INTEGER;
    CREATE INDEX event_index_id ON event_index (id_key);
    CREATE INDEX event_index_trace ON event_index (trace_key) WHERE trace_key IS NOT NULL;
    """,
)

_INSERT_EVENT = "INSERT INTO events (idx, data) VALUES (?, ?)"
_EXISTING_KEYS = (
    "SELECT i.idx, i.service, i.event_id FROM json_each(?) AS k JOIN event_index AS i"
    " ON i.id_key = json_extract(k.value, '$[0]') AND i.service = json_extract(k.value, '$[1]')"
    " AND i.event_id = json_extract(k.value, '$[2]')"
)
_INSERT_INDEX = (
    "INSERT INTO event_index (idx, service, event_id, time, action, actor, principal, resource,"
    " trace_id, environment, outcome, id_key, trace_key) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)"
)


def _alert_row(record: AlertRecord) -> tuple[object, ...]:
    r = record
    return (
        r.alert_id, r.dedup_key, r.rule_id, r.title, r.level, orjson.dumps(r.group).decode(),
        orjson.dumps(list(r.indexes)).decode(), r.first_time, r.last_time, r.raised_at,
        r.log_index, r.status, orjson.dumps(list(r.notes)).decode(),
        orjson.dumps(r.details).decode(), r.updated_at,
    )


def _alert_of(row: Sequence[object]) -> AlertRecord:
    (alert_id, key, rule_id, title, level, group, indexes, first, last, raised, log_index,
     status, notes, details, updated) = row
    return AlertRecord(
        alert_id=alert_id, dedup_key=key, rule_id=rule_id, title=title, level=level,  # type: ignore[arg-type]
        group=orjson.loads(group), indexes=tuple(orjson.loads(indexes)),  # type: ignore[arg-type]
        first_time=first, last_time=last, raised_at=raised, log_index=log_index,  # type: ignore[arg-type]
        status=status, notes=tuple(orjson.loads(notes)), details=orjson.loads(details),  # type: ignore[arg-type]
        updated_at=updated,  # type: ignore[arg-type]
    )


class _SQLiteWrite(WriteTransaction):
    def __init__(self, conn: sqlite3.Connection, lookup: sqlite3.Connection) -> None:
        self.conn = conn
        #: A reader that sees the index file (the writer must not attach it: its
        #: ``BEGIN IMMEDIATE`` would take the index file's write lock too).
        self.lookup = lookup

    def existing_indexes(self, rows: Sequence[EntryRow]) -> dict[tuple[str, str], int]:
        # One statement for the whole group: the keys travel as one JSON array and
        # SQLite probes the id index for each, without a round trip per key.
        # JSON text ends a string at U+0000, so such keys are looked up one by one.
        plain, with_nul = [], []
        for row in rows:
            service, event_id = row.service, row.event_id
            key = (_index_keys(row)[0], service, event_id)
            (with_nul if "\x00" in service or "\x00" in event_id else plain).append(key)
        rows = self.lookup.execute(_EXISTING_KEYS, (orjson.dumps(plain),)).fetchall() if plain else []
        for key in with_nul:
            rows += self.lookup.execute(
                "SELECT idx, service, event_id FROM event_index"
                " WHERE id_key = ? AND service = ? AND event_id = ?", key
            ).fetchall()
        return {(service, event_id): index for index, service, event_id in rows}

    def append_entries(self, first_index: int, rows: Sequence[EntryRow]) -> None:
        self.conn.executemany(
            _INSERT_EVENT,
            [(first_index + i, r.data) for i, r in enumerate(rows)],
        )

    def put_tiles(self, tiles: Mapping[tuple[int, int], bytes]) -> None:
        self.conn.executemany(
            "INSERT OR REPLACE INTO tiles (level, idx, hashes) VALUES (?, ?, ?)",
            ((level, index, data) for (level, index), data in tiles.items()),
        )

    def add_checkpoint(self, checkpoint: CheckpointRecord) -> None:
        cp = checkpoint
        self.conn.execute(
            "INSERT INTO checkpoints (size, root, note, created_at) VALUES (?, ?, ?, ?)",
            (cp.size, cp.root, cp.note, cp.created_at),
        )


def _index_keys(row: EntryRow) -> tuple[int, int | None]:
    """The row's ``id_key`` and ``trace_key``: as the ingest worker made them, or made
    here for a row built without them."""
    if row.id_key is not None:
        return row.id_key, row.trace_key
    return index_key(row.event_id), None if row.trace_id is None else index_key(row.trace_id)



class _SQLiteIndexWrite(IndexTransaction):
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def index_entries(self, first_index: int, rows: Sequence[EntryRow]) -> None:
        self.conn.executemany(
            _INSERT_INDEX,
            [
                (first_index + i, r.service, r.event_id, r.time, r.action, r.actor, r.principal,
                 r.resource, r.trace_id, r.environment, r.outcome, *_index_keys(r))
                for i, r in enumerate(rows)
            ],
        )
        self.conn.execute(
            "INSERT OR REPLACE INTO index_state (key, value) VALUES ('indexed_size', ?)",
            (str(first_index + len(rows)),),
        )


class _WalCheckpointer:
    """Copies the WAL back into the database files, in a thread of its own.

    The writers' automatic checkpoints are off: run by the committing thread, a
    checkpoint (copy the changed pages, fsync the file) stalls the sequencer for its
    whole length; here it overlaps commits, as SQLite releases the interpreter lock
    while it works. PASSIVE never blocks a writer or a reader.
    """

    INTERVAL = 0.5

    def __init__(self, files: list[tuple[Path, bool]]) -> None:
        self.files = files  # (path, fsync)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="auditfed-wal", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        conns = [SQLiteStore._open(path, fsync=fsync, writer=False) for path, fsync in self.files]
        try:
            while not self._stop.wait(self.INTERVAL):
                for conn in conns:
                    self._checkpoint(conn)
            for conn in conns:
                self._checkpoint(conn)
        finally:
            for conn in conns:
                conn.close()

    @staticmethod
    def _checkpoint(conn: sqlite3.Connection) -> None:
        try:
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except sqlite3.Error as exc:  # e.g. busy: the next round tries again
            log.warning("WAL checkpoint failed", extra={"error": str(exc)})


class SQLiteStore(Store):
    def __init__(self, path: str | Path, *, fsync: bool = True) -> None:
        self.path = Path(path)
        self.url = f"sqlite:///{self.path}"
        self.fsync = fsync
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._side: sqlite3.Connection | None = None
        #: Held by every write to the log file from this process (the sequencer's and
        #: the side writes): threads wait their turn on it, asleep, instead of
        #: retrying SQLite's lock (see _side_transaction).
        self._write_lock = threading.Lock()
        self.index_path = self.path.with_name(f"{self.path.stem}.index.db")
        self._writer = self._open(self.path, fsync=fsync, writer=True)
        self._migrate(self._writer, MIGRATIONS)
        # The index is derived from the log: its commits need no fsync.
        self._index_writer = self._open(self.index_path, fsync=False, writer=True)
        self._migrate(self._index_writer, INDEX_MIGRATIONS)
        self._wal = _WalCheckpointer([(self.path, fsync), (self.index_path, False)])
        self._wal_lock = threading.Lock()
        self._wal_started = False

    def _start_wal_checkpoints(self) -> None:
        # Started by the first write, not at open: most CLI commands only read.
        with self._wal_lock:
            if not self._wal_started:
                self._wal_started = True
                self._wal.start()

    # --- connections ---
    def _connect(self, *, writer: bool) -> sqlite3.Connection:
        """A connection to the log; a reader's also sees the query index."""
        conn = self._open(self.path, fsync=self.fsync, writer=writer)
        if not writer:
            conn.execute("ATTACH DATABASE ? AS search", (str(self.index_path),))
        return conn

    @staticmethod
    def _open(path: Path, *, fsync: bool, writer: bool) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={'FULL' if fsync else 'NORMAL'}")
            conn.execute("PRAGMA busy_timeout=30000")
            # WAL checkpoints run in the store's checkpointer thread, never in a
            # committing one (see _WalCheckpointer): also not in the small writes
            # beside the sequencer (alerts, federation records), where a checkpoint
            # of a WAL the sequencer has grown would stall the write.
            conn.execute("PRAGMA wal_autocheckpoint=0")
            if writer:
                conn.execute("PRAGMA cache_size=-131072")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open SQLite store {path}: {exc}") from None
        return conn

    def _reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect(writer=False)
            self._local.conn = conn
            with self._readers_lock:
                self._readers.append(conn)
        return conn

    @staticmethod
    def _migrate(conn: sqlite3.Connection, migrations: Sequence[str]) -> None:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        for number, script in enumerate(migrations[version:], start=version + 1):
            conn.execute("BEGIN IMMEDIATE")
            try:
                for statement in script.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(f"PRAGMA user_version={number}")
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    # --- writing ---
    @contextmanager
    def transaction(self, *, durable: bool = False) -> Iterator[WriteTransaction]:
        self._start_wal_checkpoints()
        conn = self._writer
        upgrade = durable and not self.fsync
        if upgrade:
            conn.execute("PRAGMA synchronous=FULL")
        try:
            with self._write_lock:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    yield _SQLiteWrite(conn, self._reader())
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite write failed: {exc}") from exc
        finally:
            if upgrade:
                conn.execute("PRAGMA synchronous=NORMAL")

    @contextmanager
    def index_transaction(self) -> Iterator[IndexTransaction]:
        self._start_wal_checkpoints()
        conn = self._index_writer
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield _SQLiteIndexWrite(conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite index write failed: {exc}") from exc

    # --- the log ---
    def size(self) -> int:
        row = self._reader().execute("SELECT MAX(idx) FROM events").fetchone()
        return 0 if row[0] is None else row[0] + 1

    def read_tiles(self, keys: Sequence[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
        execute = self._reader().execute
        tiles = {}
        for level, index in keys:
            row = execute(
                "SELECT hashes FROM tiles WHERE level = ? AND idx = ?", (level, index)
            ).fetchone()
            if row is not None:
                tiles[(level, index)] = row[0]
        return tiles

    def iter_tiles(self, level: int) -> Iterator[tuple[int, bytes]]:
        conn = self._connect(writer=False)
        try:
            yield from conn.execute(
                "SELECT idx, hashes FROM tiles WHERE level = ? ORDER BY idx", (level,)
            )
        finally:
            conn.close()

    def entries(self, start: int, end: int) -> list[tuple[int, bytes]]:
        return self._reader().execute(
            "SELECT idx, data FROM events WHERE idx >= ? AND idx < ? ORDER BY idx", (start, end)
        ).fetchall()

    def iter_entries(self, start: int = 0, chunk: int = 10_000) -> Iterator[tuple[int, bytes]]:
        # A private connection: the caller may iterate across threads and for long.
        conn = self._connect(writer=False)
        try:
            yield from conn.execute(
                "SELECT idx, data FROM events WHERE idx >= ? ORDER BY idx", (start,)
            )
        finally:
            conn.close()

    def prune_before(self, index: int) -> int:
        """Delete entries and index rows below ``index``, in chunks.

        ``retained_from`` is recorded first: a prune cut short (a crash) leaves some
        entries below it in place, which verification accepts, and the next prune
        finishes. Chunks keep each write transaction short, so a running server's
        commits go on in between. SQLite reuses the freed pages for new entries; the
        file only shrinks with ``VACUUM``.
        """
        retained_from = self.retained_from()
        target = max(min(index, self.size() - 1), retained_from)
        (lowest,) = self._reader().execute("SELECT MIN(idx) FROM events").fetchone()
        if lowest is None or target <= lowest:
            return retained_from
        if target > retained_from:
            self.set_meta("retained_from", str(target))
        index_conn = self._open(self.index_path, fsync=False, writer=True)
        try:
            for start in range(lowest, target, PRUNE_CHUNK):
                stop = min(target, start + PRUNE_CHUNK)
                with self._side_transaction() as conn:
                    conn.execute("DELETE FROM events WHERE idx >= ? AND idx < ?", (start, stop))
                index_conn.execute("BEGIN IMMEDIATE")
                # Below ``stop``, not from ``start``: also index rows an earlier prune
                # cut short left behind.
                index_conn.execute("DELETE FROM event_index WHERE idx < ?", (stop,))
                index_conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite retention failed: {exc}") from exc
        finally:
            index_conn.close()
        return target

    def indexed_size(self) -> int:
        row = self._reader().execute(
            "SELECT value FROM index_state WHERE key = 'indexed_size'"
        ).fetchone()
        return int(row[0]) if row else 0

    # --- checkpoints ---
    def latest_checkpoint(self) -> CheckpointRecord | None:
        return self._checkpoint("ORDER BY size DESC LIMIT 1", ())

    def checkpoint_at_least(self, size: int) -> CheckpointRecord | None:
        return self._checkpoint("WHERE size >= ? ORDER BY size LIMIT 1", (size,))

    def checkpoints(self) -> list[CheckpointRecord]:
        rows = self._reader().execute(
            "SELECT size, root, note, created_at FROM checkpoints ORDER BY size"
        ).fetchall()
        return [CheckpointRecord(*row) for row in rows]

    def _checkpoint(self, clause: str, params: tuple[int, ...]) -> CheckpointRecord | None:
        row = self._reader().execute(
            f"SELECT size, root, note, created_at FROM checkpoints {clause}", params
        ).fetchone()
        return None if row is None else CheckpointRecord(*row)

    # --- queries ---
    def search(self, query: Query) -> list[tuple[int, bytes]]:
        return self._search(query, "e.data")

    def search_sizes(self, query: Query) -> list[tuple[int, int]]:
        # length() of a BLOB reads its size from the record header, not its bytes.
        return self._search(query, "length(e.data)")

    def entry_sizes(self, start: int, end: int) -> list[tuple[int, int]]:
        return self._reader().execute(
            "SELECT idx, length(data) FROM events WHERE idx >= ? AND idx < ? ORDER BY idx", (start, end)
        ).fetchall()

    def _search(self, query: Query, column: str) -> list[tuple[int, Any]]:
        where, params = compile_where(query.expr, SQLITE, table="i")
        args: list[object] = list(params)
        if query.after is not None:
            where += " AND i.idx < ?" if query.newest_first else " AND i.idx > ?"
            args.append(query.after)
        order = "DESC" if query.newest_first else "ASC"
        args.append(query.limit)
        return self._reader().execute(
            f"SELECT i.idx, {column} FROM event_index AS i JOIN events AS e ON e.idx = i.idx"
            f" WHERE {where} ORDER BY i.idx {order} LIMIT ?",
            args,
        ).fetchall()

    # --- metadata and tokens ---
    def get_meta(self, key: str) -> str | None:
        row = self._reader().execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def set_meta(self, key: str, value: str) -> None:
        with self._side_transaction() as conn:
            conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def add_token(self, digest: bytes, record: TokenRecord) -> None:
        self._write(
            f"INSERT INTO tokens (digest, {TOKEN_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?)",
            (digest, record.token_id, record.role, record.service, record.environment,
             record.description, record.created_at, record.expires_at, record.revoked_at),
        )

    def find_token(self, digest: bytes) -> TokenRecord | None:
        row = self._reader().execute(
            f"SELECT {TOKEN_COLUMNS} FROM tokens WHERE digest = ?", (digest,)
        ).fetchone()
        return None if row is None else TokenRecord(*row)

    def list_tokens(self) -> list[TokenRecord]:
        rows = self._reader().execute(
            f"SELECT {TOKEN_COLUMNS} FROM tokens ORDER BY created_at"
        ).fetchall()
        return [TokenRecord(*row) for row in rows]

    def revoke_token(self, token_id: str, when: str) -> bool:
        changed = self._write(
            "UPDATE tokens SET revoked_at = ? WHERE token_id = ? AND revoked_at IS NULL",
            (when, token_id),
        )
        return changed > 0

    # --- records handed to the log's writer ---
    def hand_over(self, rows: Sequence[EntryRow], received_by: str) -> None:
        with self._side_transaction() as conn:
            conn.executemany(
                "INSERT OR IGNORE INTO handed_over (service, event_id, data, received_by)"
                " VALUES (?, ?, ?, ?)",
                [(r.service, r.event_id, r.data, received_by) for r in rows],
            )

    def is_handed_over(self, service: str, event_id: str) -> bool:
        return self._reader().execute(
            "SELECT 1 FROM handed_over WHERE service = ? AND event_id = ?", (service, event_id)
        ).fetchone() is not None

    def handed_over(self, limit: int = 100) -> list[tuple[str, str, bytes]]:
        return self._reader().execute(
            "SELECT service, event_id, data FROM handed_over ORDER BY rowid LIMIT ?", (limit,)
        ).fetchall()

    def forget_handed_over(self, keys: Sequence[tuple[str, str]]) -> None:
        with self._side_transaction() as conn:
            conn.executemany("DELETE FROM handed_over WHERE service = ? AND event_id = ?", keys)

    # --- alerts ---
    def add_alerts(
        self, alerts: Sequence[AlertRecord], deliveries: Sequence[DeliveryRecord]
    ) -> list[str]:
        stored: list[str] = []
        with self._side_transaction() as conn:
            for alert in alerts:
                cursor = conn.execute(
                    f"INSERT OR IGNORE INTO alerts ({ALERT_COLUMNS})"
                    " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    _alert_row(alert),
                )
                if cursor.rowcount:
                    stored.append(alert.alert_id)
            kept = set(stored)
            conn.executemany(
                f"INSERT INTO webhook_outbox ({DELIVERY_COLUMNS}) VALUES (?,?,?,?,?,?,?,?)",
                [
                    (d.delivery_id, d.alert_id, d.sink, d.payload, d.attempts, d.next_attempt_at,
                     d.last_error, d.delivered_at)
                    for d in deliveries
                    if d.alert_id in kept
                ],
            )
        return stored

    def stored_alert_keys(self, keys: Sequence[str]) -> set[str]:
        found: set[str] = set()
        execute = self._reader().execute
        unique = list(dict.fromkeys(keys))
        for start in range(0, len(unique), 500):
            chunk = unique[start:start + 500]
            marks = ",".join("?" * len(chunk))
            found.update(
                row[0] for row in execute(
                    f"SELECT dedup_key FROM alerts WHERE dedup_key IN ({marks})", chunk
                )
            )
        return found

    def get_alert(self, alert_id: str) -> AlertRecord | None:
        row = self._reader().execute(
            f"SELECT {ALERT_COLUMNS} FROM alerts WHERE alert_id = ?", (alert_id,)
        ).fetchone()
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
            "?", status=status, rule_id=rule_id, level=level, before=before, after=after, limit=limit
        )
        rows = self._reader().execute(sql, args).fetchall()
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
        with self._side_transaction() as conn:
            row = conn.execute(
                "SELECT status, notes FROM alerts WHERE alert_id = ?", (alert_id,)
            ).fetchone()
            if row is None or row[0] not in expected:
                return None
            notes = [*orjson.loads(row[1]), note]
            conn.execute(
                "UPDATE alerts SET status = ?, notes = ?, updated_at = ? WHERE alert_id = ?",
                (status, orjson.dumps(notes).decode(), updated_at, alert_id),
            )
            updated = conn.execute(
                f"SELECT {ALERT_COLUMNS} FROM alerts WHERE alert_id = ?", (alert_id,)
            ).fetchone()
        return _alert_of(updated)

    def pending_deliveries(
        self, sink: str, *, due_before: float, limit: int = 100
    ) -> list[DeliveryRecord]:
        rows = self._reader().execute(
            f"SELECT {DELIVERY_COLUMNS} FROM webhook_outbox"
            " WHERE sink = ? AND delivered_at IS NULL AND next_attempt_at <= ?"
            " ORDER BY next_attempt_at, delivery_id LIMIT ?",
            (sink, due_before, limit),
        ).fetchall()
        return [DeliveryRecord(*row) for row in rows]

    def finish_delivery(
        self,
        delivery_id: str,
        *,
        attempts: int,
        next_attempt_at: float,
        error: str | None,
        delivered_at: str | None,
    ) -> None:
        with self._side_transaction() as conn:
            conn.execute(
                "UPDATE webhook_outbox SET attempts = ?, next_attempt_at = ?, last_error = ?,"
                " delivered_at = ? WHERE delivery_id = ?",
                (attempts, next_attempt_at, error, delivered_at, delivery_id),
            )

    @contextmanager
    def _side_transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction beside the sequencer's (alerts, the outbox, federation
        records, administrative changes).

        One long-lived connection: opening a connection per write costs more than the
        write. Writers of this process take turns on ``_write_lock``, so under load a
        side write waits asleep for the end of the sequencer's current commit, not in
        SQLite's busy handler (whose sleeps grow to 100 ms) or in a retry loop. Another
        process's writer (a CLI command) can still hold the file's lock: then
        ``BEGIN IMMEDIATE`` is retried every millisecond, up to 30 s.
        """
        with self._write_lock:
            if self._side is None:
                # Not attached to the query index: BEGIN IMMEDIATE would take the
                # index's write lock too, and stall the indexer for every side write.
                self._side = self._open(self.path, fsync=self.fsync, writer=False)
                self._side.execute("PRAGMA busy_timeout=0")
            conn = self._side
            try:
                deadline = time.monotonic() + 30
                while True:
                    try:
                        conn.execute("BEGIN IMMEDIATE")
                        break
                    except sqlite3.OperationalError as exc:
                        if "locked" not in str(exc) or time.monotonic() > deadline:
                            raise
                        time.sleep(0.001)
                try:
                    yield conn
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                raise StoreError(f"SQLite write failed: {exc}") from exc

    def _write(self, sql: str, params: tuple[object, ...]) -> int:
        """One statement in a side transaction; the number of rows it changed."""
        with self._side_transaction() as conn:
            return conn.execute(sql, params).rowcount

    # --- federation ---
    _NODE_COLUMNS = (
        "name, vkey, status, reason, position, compact, checkpoint, last_seen, enrolled_at,"
        " updated_at"
    )

    def federation_nodes(self) -> list[FederatedNodeRecord]:
        rows = self._reader().execute(
            f"SELECT {self._NODE_COLUMNS} FROM federation_nodes ORDER BY name"
        ).fetchall()
        return [FederatedNodeRecord(*row) for row in rows]

    def get_federation_node(self, name: str) -> FederatedNodeRecord | None:
        row = self._reader().execute(
            f"SELECT {self._NODE_COLUMNS} FROM federation_nodes WHERE name = ?", (name,)
        ).fetchone()
        return None if row is None else FederatedNodeRecord(*row)

    def advance_federation_node(self, name: str, expected_position: int, position: int,
                                compact: bytes, checkpoint: str, seen: str) -> bool:
        return self._write(*advance_node("?", name, expected_position, position, compact,
                                         checkpoint, seen)) == 1

    def put_federation_node(self, record: FederatedNodeRecord) -> None:
        r = record
        self._write(
            f"INSERT OR REPLACE INTO federation_nodes ({self._NODE_COLUMNS})"
            " VALUES (?,?,?,?,?,?,?,?,?,?)",
            (r.name, r.key, r.status, r.reason, r.position, r.compact, r.checkpoint,
             r.last_seen, r.enrolled_at, r.updated_at),
        )

    def add_cosignature(self, size: int, witness: str, line: str, created_at: str) -> None:
        self._write(
            "INSERT OR REPLACE INTO cosignatures (size, witness, line, created_at)"
            " VALUES (?, ?, ?, ?)",
            (size, witness, line, created_at),
        )

    def cosignatures(self, size: int) -> list[str]:
        rows = self._reader().execute(
            "SELECT line FROM cosignatures WHERE size = ? ORDER BY witness", (size,)
        ).fetchall()
        return [row[0] for row in rows]

    def latest_cosigned_size(self) -> int | None:
        row = self._reader().execute("SELECT MAX(size) FROM cosignatures").fetchone()
        return row[0]

    def close(self) -> None:
        self._wal.stop()
        with self._readers_lock:
            for conn in self._readers:
                conn.close()
            self._readers.clear()
        with self._write_lock:
            if self._side is not None:
                self._side.close()
                self._side = None
        self._writer.close()
        self._index_writer.close()
