"""Many auditfed nodes on one PostgreSQL database: any node ingests, one sequences.

The model is Trillian's log on a database. Every node accepts events; exactly one
node at a time, the *leader*, assigns log indexes, writes entries and tiles and
signs checkpoints.

Leadership: a PostgreSQL session advisory lock (``LEADER_LOCK``) held on a dedicated
connection. A node that gets the lock starts a new *epoch* in the ``log_head`` row
and then writes only in transactions that first check, and lock, that row at its
epoch (:meth:`_PGWrite.fence`): a leader that lost its lock without noticing (a
network partition, a paused process) can no longer commit anything, because the
next leader moved the epoch on before reading the log. When the leader dies its
connection closes and PostgreSQL releases the lock at once; every node tries to
take it every ``ELECTION_INTERVAL`` seconds, so another leads within about a second
(plus rebuilding the tree's right edge from the stored tiles: one tile read).

Ingest on the leader goes straight into its group commit (:class:`LeaderSequencer`,
the single-node :class:`~auditfed.ingest.sequencer.Sequencer` with fencing): the
answer carries the index. Ingest on any other node is written to the ``pending``
table (group-committed too, deduplicated by ``(service, id)`` against the index and
the pending events) and acknowledged once that commit is durable, with
``"index": null, "sequenced": false``. Each leader commit takes the oldest pending
events (and any pending copy of a key it is committing) in the same transaction
that appends them, so a pending event is sequenced exactly once, in the order the
events were acknowledged. A client learns the index and inclusion proof later with
``GET /v1/events/by-id?service=&id=`` (:mod:`auditfed.api.cluster_routes`).

Leader-only work: services registered with :meth:`ClusterSequencer.run_on_leader`
(detection and alert delivery) are started when this node becomes the leader and
stopped when it steps down, so they run exactly once in the cluster; detection
resumes from the watermark it keeps in the shared store.

Faults: any failed leader transaction (the database went away, the epoch moved on)
steps the leader down: queued requests get 503, the lock connection is closed, and
the next election (possibly this node again) starts from what is committed. An
ambiguous commit (the connection died during ``COMMIT``) is answered 503 too; a
client that retries gets ``duplicate`` if it had been committed. Nothing is ever
acknowledged that is not committed.

Every node heartbeats into the ``nodes`` table; ``auditfed status`` and ``/metrics``
show the leader, the queue of unsequenced events and the nodes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import queue
import socket
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import UTC, datetime
from hashlib import sha256
from typing import Any, Protocol

import psycopg
from prometheus_client import Gauge

from auditfed.errors import ConfigError, StoreError, Unavailable
from auditfed.ingest.prepare import Prepared
from auditfed.ingest.sequencer import CommitListener, Sequenced, Sequencer, _Job, _settle
from auditfed.ledger import Signer
from auditfed.store.base import CheckpointRecord, EntryRow
from auditfed.store.postgres import LEADER_LOCK, PostgresStore

log = logging.getLogger(__name__)

#: Seconds between election attempts and heartbeats.
ELECTION_INTERVAL = 0.5
#: Seconds a leader waits for more work before looking at the pending table again.
PENDING_POLL = 0.01
#: Pending events taken per leader commit at most.
PENDING_BATCH = 10_000
#: A node whose heartbeat is older than this is shown as down.
STALE_AFTER = 10.0


class LeaderService(Protocol):
    def start(self) -> None: ...

    def stop(self, timeout: float = ...) -> None: ...


# --- the leader ----------------------------------------------------------------------


class _FencedStore:
    """The store as the leader sees it: every write transaction is fenced by its epoch.

    Any failure in a transaction marks the leadership broken, so the elector steps
    down and a fresh leader (maybe this node) restarts from what is committed.
    """

    def __init__(self, store: PostgresStore, epoch: int) -> None:
        self._store = store
        self.epoch = epoch
        self.broken: str | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    @contextlib.contextmanager
    def transaction(self, *, durable: bool = False) -> Any:
        if self.broken:
            raise Unavailable(f"this node no longer leads the log: {self.broken}")
        try:
            with self._store.transaction(durable=durable) as tx:
                tx.fence(self.epoch)
                yield tx
        except Exception as exc:
            self.broken = str(exc) or type(exc).__name__
            raise


class LeaderSequencer(Sequencer):
    """The single-node sequencer, fenced, that also sequences other nodes' pending events."""

    def __init__(self, store: _FencedStore, signer: Signer, listeners: list[CommitListener],
                 **options: Any) -> None:
        super().__init__(store, signer, **options)  # type: ignore[arg-type]
        self.fenced = store
        self.listeners = listeners

    def _run(self) -> None:
        try:
            self._loop()
        except Exception as exc:  # never leave waiters hanging
            log.exception("leader sequencer failed")
            self.fenced.broken = self.fenced.broken or str(exc)
            self._fail_queued(Unavailable("the log's leader stopped"))

    def _fail_queued(self, error: Unavailable) -> None:
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                return
            if isinstance(job, _Job):
                _settle(job.future, error=error)

    def _loop(self) -> None:
        self._recover_index()
        while True:
            try:
                first = self._queue.get(timeout=PENDING_POLL)
            except queue.Empty:
                if self.fenced.broken:
                    time.sleep(PENDING_POLL)
                    continue
                try:
                    waiting = self.fenced.has_pending()
                except Exception:
                    waiting = False
                if waiting:
                    self._wait_for_index()
                    self._commit([])
                continue
            if not self._process(first):
                return

    def _commit(self, jobs: list[_Job]) -> None:
        """One group commit: the oldest pending events, then this node's own."""
        started = time.perf_counter()
        snapshot = self.tree.copy()
        first_index = self.tree.size
        local_keys = list({(p.row.service, p.row.event_id) for job in jobs for p in job.items or ()
                           if not p.fresh_id})
        try:
            with self.fenced.transaction() as tx:
                taken = tx.take_pending(PENDING_BATCH, local_keys)
                pending_job = _Job([Prepared(0, row, fresh) for _, fresh, row in taken])
                everything = [pending_job, *jobs]
                results, rows = self._assign(
                    everything, tx.existing_indexes(self._unknown_rows(everything))
                )
                if rows:
                    tx.append_entries(first_index, rows)
                    self.tree.extend(row.leaf_hash for row in rows)
                    tx.put_tiles(self.tree.take_dirty_tiles())
                    tx.set_head_size(self.tree.size)
        except Exception as exc:
            self.tree = snapshot
            log.error("leader commit failed", extra={"error": str(exc)})
            failure = Unavailable(f"the log could not commit: {exc}")
            for job in jobs:
                _settle(job.future, error=failure)
            return
        if rows:
            self._await_index(first_index, rows)
            with contextlib.suppress(Exception):
                self.fenced.prepare_partitions(self.tree.size)
        if self.observe_commit:
            self.observe_commit(len(rows), time.perf_counter() - started)
        for job, result in zip(jobs, results[1:], strict=True):
            _settle(job.future, result)
        for listener in list(self.listeners):
            try:
                listener(first_index, rows)
            except Exception:
                log.exception("commit listener failed")

    def abandon(self) -> None:
        """Stop without a final checkpoint: this node no longer leads."""
        if self._stopped:
            return
        self._stopped = True
        from auditfed.ingest.sequencer import _STOP

        self._queue.put(_STOP)
        if self._thread.is_alive():
            self._thread.join(timeout=30)
        self._fail_queued(Unavailable("the log's leader changed; retry"))


# --- any node: the pending writer ------------------------------------------------------


@dataclass
class _PendingJob:
    items: Sequence[Prepared]
    future: Future = field(default_factory=Future)


class PendingWriter:
    """Group-commits events into the pending table (a follower's acknowledgement)."""

    def __init__(self, store: PostgresStore, node_id: str, max_commit_events: int,
                 observe_commit: Callable[[int, float], None] | None = None) -> None:
        self.store = store
        self.node_id = node_id
        self.max_commit_events = max_commit_events
        self.observe_commit = observe_commit
        self._queue: queue.SimpleQueue[_PendingJob | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="auditfed-pending", daemon=True)
        self._stopped = False

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        if not self._stopped:
            self._stopped = True
            self._queue.put(None)
            self._thread.join(timeout=30)

    def submit(self, items: Sequence[Prepared]) -> Future:
        if self._stopped:
            raise Unavailable("the node is shutting down")
        job = _PendingJob(items)
        self._queue.put(job)
        return job.future

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            jobs = [first]
            count = len(first.items)
            stop = False
            while count < self.max_commit_events:
                try:
                    job = self._queue.get_nowait()
                except queue.Empty:
                    break
                if job is None:
                    stop = True
                    break
                jobs.append(job)
                count += len(job.items)
            self._commit(jobs)
            if stop:
                return

    def _commit(self, jobs: list[_PendingJob]) -> None:
        started = time.perf_counter()
        given = {(p.row.service, p.row.event_id): p.row for job in jobs for p in job.items
                 if not p.fresh_id}
        try:
            with self.store.transaction() as tx:
                known = tx.existing_indexes(list(given.values()))
                batch: dict[tuple[str, str], tuple[bool, EntryRow]] = {}
                for job in jobs:
                    for p in job.items:
                        key = (p.row.service, p.row.event_id)
                        if key not in known and key not in batch:
                            batch[key] = (p.fresh_id, p.row)
                inserted = tx.add_pending(list(batch.values()), self.node_id)
        except Exception as exc:
            failure = exc if isinstance(exc, Unavailable) else Unavailable(f"could not queue: {exc}")
            for job in jobs:
                _settle(job.future, error=failure)
            return
        if self.observe_commit:
            self.observe_commit(0, time.perf_counter() - started)
        claimed: set[tuple[str, str]] = set()
        for job in jobs:
            answers = []
            for p in job.items:
                key = (p.row.service, p.row.event_id)
                if key in known:
                    answers.append(Sequenced(known[key], duplicate=True))
                elif key in inserted and key not in claimed:
                    claimed.add(key)
                    answers.append(Sequenced(None, duplicate=False))  # type: ignore[arg-type]
                else:  # pending already (sent before, or twice in this commit)
                    answers.append(Sequenced(None, duplicate=True))  # type: ignore[arg-type]
            _settle(job.future, answers)


# --- the node's face -------------------------------------------------------------------


def node_identity(settings: Any) -> str:
    """This server's name among the cluster's servers: unique per server (host and
    listen address). A federation ``node_name`` names the whole log, which every
    server of the cluster shares, so it only prefixes the identity."""
    server = f"{socket.gethostname()}:{settings.listen}"
    return f"{settings.node_name}@{server}" if settings.node_name else server


def check_shared_secrets(store: PostgresStore, signer: Signer, salt: bytes) -> None:
    """Every node of one log must sign with the log's key and redact with its salt."""
    mine = signer.verifier_key()
    registered = store.claim_meta("log_verifier_key", mine)
    if registered != mine:
        raise ConfigError(
            f"this node's log key ({mine}) is not the log's ({registered}): every node on "
            "one PostgreSQL store must use the same log.key and redaction.salt; copy them "
            "from the first node's data dir (see docs/postgresql.md)"
        )
    fingerprint = sha256(b"auditfed-redaction-salt\n" + salt).hexdigest()
    if store.claim_meta("redaction_salt_sha256", fingerprint) != fingerprint:
        raise ConfigError(
            "this node's redaction.salt differs from the log's: copy redaction.salt from the "
            "first node's data dir (see docs/postgresql.md)"
        )


class ClusterSequencer:
    """What the API uses of :class:`Sequencer`, for one node of a PostgreSQL cluster."""

    def __init__(
        self,
        store: PostgresStore,
        signer: Signer,
        *,
        settings: Any,
        salt: bytes,
        max_commit_events: int = 20_000,
        observe_commit: Callable[[int, float], None] | None = None,
        registry: Any = None,
    ) -> None:
        check_shared_secrets(store, signer, salt)
        self.store = store
        self.signer = signer
        self.node_id = node_identity(settings)
        self.address = settings.listen
        self.checkpoint_interval = float(settings.checkpoint_interval)
        self.max_commit_events = max_commit_events
        self.observe_commit = observe_commit
        self.listeners: list[CommitListener] = []
        self.started_at = datetime.now(UTC)
        self.pending = PendingWriter(store, self.node_id, max_commit_events, None)
        self._leader: LeaderSequencer | None = None
        self._lock_conn: psycopg.Connection | None = None
        self._leader_factories: list[Callable[[], LeaderService]] = []
        self._leader_services: list[LeaderService] = []
        self._elector = threading.Thread(target=self._elect_loop, name="auditfed-elector", daemon=True)
        self._halt = threading.Event()
        self._state_lock = threading.RLock()
        self._stopped = False
        self._cache: dict[str, tuple[float, Any]] = {}
        self.status_cache: dict[str, Any] = {"pending": 0, "nodes": 0, "epoch": 0}
        if registry is not None:
            self._register_metrics(registry)

    # --- metrics ---
    def _register_metrics(self, registry: Any) -> None:
        Gauge("auditfed_cluster_is_leader", "1 if this node leads the log", registry=registry
              ).set_function(lambda: 1.0 if self.is_leader else 0.0)
        Gauge("auditfed_cluster_pending_events", "Acknowledged events not yet sequenced",
              registry=registry).set_function(lambda: self.status_cache["pending"])
        Gauge("auditfed_cluster_nodes", "Nodes with a recent heartbeat", registry=registry
              ).set_function(lambda: self.status_cache["nodes"])
        Gauge("auditfed_cluster_leader_epoch", "The log head's leadership epoch",
              registry=registry).set_function(lambda: self.status_cache["epoch"])
        Gauge("auditfed_cluster_oldest_pending_seconds", "Age of the oldest unsequenced event",
              registry=registry).set_function(lambda: self.status_cache.get("oldest") or 0.0)

    # --- what the API reads ---
    @property
    def is_leader(self) -> bool:
        leader = self._leader
        return leader is not None and not leader.fenced.broken

    def _cached(self, name: str, read: Callable[[], Any], ttl: float = 0.05) -> Any:
        now = time.monotonic()
        hit = self._cache.get(name)
        if hit is not None and now - hit[0] < ttl:
            return hit[1]
        try:
            value = read()
        except Exception:
            # The database is away: the last value seen (these are informative on a
            # follower; every write still fails until the database answers again).
            if hit is None:
                raise
            return hit[1]
        self._cache[name] = (now, value)
        return value

    @property
    def size(self) -> int:
        leader = self._leader
        if leader is not None:
            return leader.size
        return self._cached("size", self.store.size)

    @property
    def latest_checkpoint(self) -> CheckpointRecord | None:
        leader = self._leader
        if leader is not None:
            return leader.latest_checkpoint
        return self._cached("checkpoint", self.store.latest_checkpoint)

    @property
    def indexed_size(self) -> int:
        leader = self._leader
        if leader is not None:
            return leader.indexed_size
        return self._cached("indexed", self.store.indexed_size)

    def wait_indexed(self, timeout: float = 2.0) -> bool:
        leader = self._leader
        if leader is not None:
            return leader.wait_indexed(timeout)
        target = self.store.size()
        deadline = time.monotonic() + timeout
        while self.store.indexed_size() < target:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    # --- submitting ---
    def submit(self, items: Sequence[Prepared]) -> Future:
        if self._stopped:
            raise Unavailable("the log is shutting down")
        leader = self._leader
        if leader is not None and not leader.fenced.broken:
            with contextlib.suppress(Unavailable):
                return leader.submit(items)
        return self.pending.submit(items)

    async def append(self, items: Sequence[Prepared]) -> list[Sequenced]:
        return await asyncio.wrap_future(self.submit(items))

    def append_sync(self, items: Sequence[Prepared]) -> list[Sequenced]:
        return self.submit(items).result()

    async def checkpoint(self) -> CheckpointRecord:
        leader = self._leader
        if leader is not None and not leader.fenced.broken:
            return await leader.checkpoint()
        return await asyncio.get_running_loop().run_in_executor(None, self._followed_checkpoint)

    def checkpoint_now(self) -> CheckpointRecord:
        leader = self._leader
        if leader is not None and not leader.fenced.broken:
            return leader.checkpoint_now()
        return self._followed_checkpoint()

    def _followed_checkpoint(self) -> CheckpointRecord:
        """On a follower: the leader's checkpoint covering the log as it is now.

        The leader signs at least every ``checkpoint_interval`` while the log grows;
        wait for that (briefly), else answer the latest one."""
        target = self.store.size()
        deadline = time.monotonic() + 2 * self.checkpoint_interval + 1.0
        while True:
            latest = self.store.latest_checkpoint()
            if latest is not None and (latest.size >= target or time.monotonic() > deadline):
                return latest
            if time.monotonic() > deadline:
                raise Unavailable("no checkpoint has been signed yet; retry")
            time.sleep(0.02)

    # --- leader-only services ---
    def run_on_leader(self, factory: Callable[[], LeaderService]) -> None:
        """Start ``factory()`` whenever this node becomes the leader; stop it on stepping down."""
        with self._state_lock:
            self._leader_factories.append(factory)
            if self._leader is not None:
                self._start_service(factory)

    def _start_service(self, factory: Callable[[], LeaderService]) -> None:
        try:
            service = factory()
            service.start()
            self._leader_services.append(service)
        except Exception:
            log.exception("a leader service failed to start")

    # --- lifecycle ---
    def start(self) -> None:
        self.pending.start()
        self._tick()  # a lone node leads before it serves its first request
        self._elector.start()

    def stop(self) -> None:
        if self._stopped:
            return
        self._halt.set()
        if self._elector.is_alive():
            self._elector.join(timeout=30)
        with self._state_lock:
            leader = self._leader
            self._stop_services()
            if leader is not None:
                leader.stop()  # finish the queue, sign a final checkpoint
                self._leader = None
        self._stopped = True
        self.pending.stop()
        self._release_lock()
        with contextlib.suppress(Exception):
            self.store.forget_node(self.node_id)

    # --- election ---
    def _elect_loop(self) -> None:
        while not self._halt.wait(ELECTION_INTERVAL):
            try:
                self._tick()
            except Exception:
                log.exception("election round failed")

    def _tick(self) -> None:
        with self._state_lock:
            if self._halt.is_set() and self._stopped:
                return
            leader = self._leader
            if leader is not None:
                if leader.fenced.broken or not self._lock_alive():
                    self._step_down(leader.fenced.broken or "lost the leader lock")
            elif self._try_lock():
                self._become_leader()
        self._heartbeat()

    def _heartbeat(self) -> None:
        try:
            self.store.heartbeat(self.node_id, self.address, socket.gethostname(), os.getpid(),
                                 "leader" if self.is_leader else "follower", self.size,
                                 self.started_at)
            status = self.store.cluster_status(STALE_AFTER)
        except Exception as exc:
            log.warning("heartbeat failed", extra={"error": str(exc)})
            return
        self.status_cache = {
            "pending": status["pending"],
            "oldest": status["oldest_pending_seconds"],
            "nodes": sum(1 for n in status["nodes"] if n["role"] != "down"),
            "epoch": status["leader_epoch"],
        }

    def _try_lock(self) -> bool:
        try:
            if self._lock_conn is None or self._lock_conn.closed:
                self._lock_conn = self.store.lock_connection()
            row = self._lock_conn.execute("SELECT pg_try_advisory_lock(%s)", (LEADER_LOCK,)).fetchone()
            return bool(row and row[0])
        except Exception as exc:
            log.debug("cannot try the leader lock", extra={"error": str(exc)})
            self._release_lock()
            return False

    def _lock_alive(self) -> bool:
        conn = self._lock_conn
        if conn is None or conn.closed:
            return False
        try:
            conn.execute("SELECT 1")
            return True
        except Exception:
            return False

    def _release_lock(self) -> None:
        conn, self._lock_conn = self._lock_conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def _become_leader(self) -> None:
        started = time.monotonic()
        try:
            epoch = self.store.begin_epoch(self.node_id)
            fenced = _FencedStore(self.store, epoch)
            leader = LeaderSequencer(
                fenced, self.signer, self.listeners,
                max_commit_events=self.max_commit_events, observe_commit=self.observe_commit,
            )
            leader.start()
        except (StoreError, Unavailable, psycopg.Error) as exc:
            log.error("cannot take over the log", extra={"error": str(exc)})
            self._release_lock()
            if isinstance(exc, StoreError) and "run 'auditfed verify'" in str(exc):
                raise
            return
        self._leader = leader
        log.info("leading the log", extra={"node": self.node_id, "epoch": epoch, "size": leader.size,
                                           "seconds": round(time.monotonic() - started, 3)})
        for factory in self._leader_factories:
            self._start_service(factory)

    def _stop_services(self) -> None:
        services, self._leader_services = self._leader_services, []
        for service in services:
            try:
                service.stop(5.0)
            except Exception:
                log.exception("a leader service failed to stop")

    def _step_down(self, reason: str) -> None:
        leader = self._leader
        log.warning("no longer leading the log", extra={"node": self.node_id, "reason": reason})
        self._stop_services()
        self._leader = None
        if leader is not None:
            leader.fenced.broken = leader.fenced.broken or reason
            leader.abandon()
        self._release_lock()

    # --- operations ---
    def status(self) -> dict[str, Any]:
        status = self.store.cluster_status(STALE_AFTER)
        status["this_node"] = self.node_id
        status["this_node_leads"] = self.is_leader
        return status
