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
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from auditfed.errors import StoreError
from auditfed.store.base import (
    CheckpointRecord,
    EntryRow,
    Store,
    TokenRecord,
    WriteTransaction,
)
from auditfed.store.filters import SQLITE, Query, compile_where

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
)

_INSERT_EVENT = "INSERT INTO events (idx, data) VALUES (?, ?)"
_INSERT_INDEX = (
    "INSERT INTO event_index (idx, service, event_id, time, action, actor, principal, resource,"
    " trace_id, environment, outcome) VALUES (?,?,?,?,?,?,?,?,?,?,?)"
)
_TOKEN_COLUMNS = (
    "token_id, role, service, environment, description, created_at, expires_at, revoked_at"
)


class _SQLiteWrite(WriteTransaction):
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def existing_indexes(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], int]:
        found: dict[tuple[str, str], int] = {}
        lookup = self.conn.execute
        for service, event_id in keys:
            row = lookup(
                "SELECT idx FROM event_index WHERE service = ? AND event_id = ?", (service, event_id)
            ).fetchone()
            if row is not None:
                found[(service, event_id)] = row[0]
        return found

    def append_entries(self, first_index: int, rows: Sequence[EntryRow]) -> None:
        self.conn.executemany(
            _INSERT_EVENT,
            [(first_index + i, r.data) for i, r in enumerate(rows)],
        )

    def index_entries(self, first_index: int, rows: Sequence[EntryRow]) -> None:
        self.conn.executemany(
            _INSERT_INDEX,
            [
                (first_index + i, r.service, r.event_id, r.time, r.action, r.actor, r.principal,
                 r.resource, r.trace_id, r.environment, r.outcome)
                for i, r in enumerate(rows)
            ],
        )
        self.conn.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('indexed_size', ?)",
            (str(first_index + len(rows)),),
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


class SQLiteStore(Store):
    def __init__(self, path: str | Path, *, fsync: bool = True) -> None:
        self.path = Path(path)
        self.url = f"sqlite:///{self.path}"
        self.fsync = fsync
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._writer = self._connect(writer=True)
        self._migrate()

    # --- connections ---
    def _connect(self, *, writer: bool) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=30
            )
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={'FULL' if self.fsync else 'NORMAL'}")
            conn.execute("PRAGMA busy_timeout=30000")
            if writer:
                conn.execute("PRAGMA cache_size=-131072")
                # Fewer, larger WAL checkpoints: a page changed by many commits is
                # copied back to the database once.
                conn.execute("PRAGMA wal_autocheckpoint=20000")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open SQLite store {self.path}: {exc}") from None
        return conn

    def _reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect(writer=False)
            self._local.conn = conn
            with self._readers_lock:
                self._readers.append(conn)
        return conn

    def _migrate(self) -> None:
        conn = self._writer
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
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
        conn = self._writer
        upgrade = durable and not self.fsync
        if upgrade:
            conn.execute("PRAGMA synchronous=FULL")
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield _SQLiteWrite(conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite write failed: {exc}") from exc
        finally:
            if upgrade:
                conn.execute("PRAGMA synchronous=NORMAL")

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

    def indexed_size(self) -> int:
        value = self.get_meta("indexed_size")
        return int(value) if value else 0

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
        where, params = compile_where(query.expr, SQLITE, table="i")
        args: list[object] = list(params)
        if query.after is not None:
            where += " AND i.idx < ?" if query.newest_first else " AND i.idx > ?"
            args.append(query.after)
        order = "DESC" if query.newest_first else "ASC"
        args.append(query.limit)
        return self._reader().execute(
            f"SELECT i.idx, e.data FROM event_index AS i JOIN events AS e ON e.idx = i.idx"
            f" WHERE {where} ORDER BY i.idx {order} LIMIT ?",
            args,
        ).fetchall()

    # --- metadata and tokens ---
    def get_meta(self, key: str) -> str | None:
        row = self._reader().execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def set_meta(self, key: str, value: str) -> None:
        self._write("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def add_token(self, digest: bytes, record: TokenRecord) -> None:
        self._write(
            f"INSERT INTO tokens (digest, {_TOKEN_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?)",
            (digest, record.token_id, record.role, record.service, record.environment,
             record.description, record.created_at, record.expires_at, record.revoked_at),
        )

    def find_token(self, digest: bytes) -> TokenRecord | None:
        row = self._reader().execute(
            f"SELECT {_TOKEN_COLUMNS} FROM tokens WHERE digest = ?", (digest,)
        ).fetchone()
        return None if row is None else TokenRecord(*row)

    def list_tokens(self) -> list[TokenRecord]:
        rows = self._reader().execute(
            f"SELECT {_TOKEN_COLUMNS} FROM tokens ORDER BY created_at"
        ).fetchall()
        return [TokenRecord(*row) for row in rows]

    def revoke_token(self, token_id: str, when: str) -> bool:
        changed = self._write(
            "UPDATE tokens SET revoked_at = ? WHERE token_id = ? AND revoked_at IS NULL",
            (when, token_id),
        )
        return changed > 0

    def _write(self, sql: str, params: tuple[object, ...]) -> int:
        # Small administrative writes use their own short connection so they never
        # interleave with the sequencer's transaction on the writer connection.
        conn = self._connect(writer=False)
        try:
            return conn.execute(sql, params).rowcount
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite write failed: {exc}") from None
        finally:
            conn.close()

    def close(self) -> None:
        with self._readers_lock:
            for conn in self._readers:
                conn.close()
            self._readers.clear()
        self._writer.close()
