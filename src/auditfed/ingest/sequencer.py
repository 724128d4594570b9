"""The sequencer: the log's single writer.

Requests hand over prepared events and wait; one thread takes everything that is
waiting, assigns indexes, writes entries and tiles in ONE transaction (a group
commit), and only then answers every waiting request. Concurrent requests therefore
share commits and fsyncs, and an answer always means "durable".

The same thread signs checkpoints (C2SP tlog-checkpoint) of the committed tree, in a
commit that is always fsynced; a checkpoint is published only after that commit, so
no published checkpoint can cover entries a crash or power loss could take back.

The index trails the log. A commit writes only the log (entries and tiles): that is
what an acknowledgement waits for. The committed rows then go to the
:class:`~auditfed.ingest.indexer.Indexer`, which writes the query index in its own
thread while the next commits proceed. At most ``MAX_INDEX_LAG`` rows may wait for
it: beyond that, commits wait, which bounds both the lag and the memory and
throttles ingest to what the index sustains. A restart re-reads what the index
missed from the entries themselves.

Deduplication: an event is identified by ``(source.service, id)``. Re-sending it
answers ``duplicate`` with the original index, also within one commit group: keys
are looked up among the rows waiting for the index (in memory), then in the index.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import NamedTuple

import orjson

from auditfed.batches import drain
from auditfed.errors import StoreError, Unavailable
from auditfed.event.model import format_time
from auditfed.ingest.indexer import Indexer
from auditfed.ingest.prepare import Prepared, entry_row
from auditfed.ledger import Checkpoint, Signer, TreeAppender, root_at, sign_checkpoint
from auditfed.store.base import CheckpointRecord, EntryRow, Store

log = logging.getLogger(__name__)


class Sequenced(NamedTuple):
    """Where an event went: its log index, and whether it was stored before."""

    index: int
    duplicate: bool


#: Called in the sequencer thread after each commit with the first new index and the
#: new rows (detection and forwarding subscribe here).
CommitListener = Callable[[int, Sequence[EntryRow]], None]


@dataclass
class _Job:
    items: Sequence[Prepared] | None  # None: a checkpoint request
    future: Future = field(default_factory=Future)


_STOP = object()


def _settle(future: Future, result: object = None, *, error: BaseException | None = None) -> None:
    """Resolve a waiter's future unless the waiter gave up (cancelled) meanwhile."""
    with contextlib.suppress(InvalidStateError):
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

MAX_INDEX_LAG = 100_000
RECOVERY_CHUNK = 20_000


class Sequencer:
    def __init__(
        self,
        store: Store,
        signer: Signer,
        *,
        max_commit_events: int = 20_000,
        observe_commit: Callable[[int, float], None] | None = None,
    ) -> None:
        self.store = store
        self.signer = signer
        self.max_commit_events = max_commit_events
        self.observe_commit = observe_commit
        self.listeners: list[CommitListener] = []
        self.tree = TreeAppender.load(store.size(), store)
        self.latest_checkpoint = store.latest_checkpoint()
        self._check_against_checkpoint()
        self.indexer = Indexer(store)
        self._unindexed_rows = 0
        self._unindexed_keys: dict[tuple[str, str], int] = {}
        self._queue: queue.SimpleQueue[_Job | object] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="auditfed-sequencer", daemon=True)
        self._stopped = False
        # events handed over whose future is not settled yet: the queue's depth
        self._submitted = 0
        self._settled = 0
        self._count_lock = threading.Lock()

    @property
    def queued_events(self) -> int:
        """Events waiting for their commit (cheap; for back-pressure: 429 when deep)."""
        return self._submitted - self._settled

    def _count_settled(self, count: int) -> None:
        with self._count_lock:
            self._settled += count

    @property
    def size(self) -> int:
        """Entries committed (what the next checkpoint will cover)."""
        return self.tree.size

    def _check_against_checkpoint(self) -> None:
        """Refuse to run on a store that lost or changed what a checkpoint signed."""
        cp = self.latest_checkpoint
        if cp is None:
            return
        if self.tree.size < cp.size:
            raise StoreError(
                f"the store holds {self.tree.size} entries but checkpoint {cp.size} was "
                "signed: entries were lost; run 'auditfed verify'"
            )
        if root_at(cp.size, self.store) != cp.root:
            raise StoreError(
                f"the stored tree at size {cp.size} does not match the signed checkpoint; "
                "run 'auditfed verify'"
            )

    @property
    def indexed_size(self) -> int:
        return self.indexer.indexed_size

    def wait_indexed(self, timeout: float = 2.0) -> bool:
        """Wait until the query index covers what is committed now (read your writes)."""
        target = self.tree.size
        deadline = time.monotonic() + timeout
        while self.indexed_size < target and time.monotonic() < deadline:
            time.sleep(0.005)
        return self.indexed_size >= target

    # --- lifecycle ---
    def start(self) -> None:
        self.indexer.start()
        self._thread.start()
        if self.latest_checkpoint is None or self.latest_checkpoint.size < self.size:
            self.checkpoint_now()

    def stop(self) -> None:
        """Finish what is queued, sign a final checkpoint, stop the thread."""
        if self._stopped:
            return
        self._stopped = True
        if self._thread.is_alive():
            self._queue.put(_Job(None))
            self._queue.put(_STOP)
            self._thread.join()

    # --- submitting ---
    async def append(self, items: Sequence[Prepared]) -> list[Sequenced]:
        return await asyncio.wrap_future(self._submit(_Job(items)))

    def append_sync(self, items: Sequence[Prepared]) -> list[Sequenced]:
        return self._submit(_Job(items)).result()

    def submit(self, items: Sequence[Prepared]) -> Future:
        """Queue items without waiting; the future resolves once they are durable."""
        return self._submit(_Job(items))

    async def checkpoint(self) -> CheckpointRecord:
        """A checkpoint of the committed tree, signed now if the log grew."""
        return await asyncio.wrap_future(self._submit(_Job(None)))

    def checkpoint_now(self) -> CheckpointRecord:
        return self._submit(_Job(None)).result()

    def _submit(self, job: _Job) -> Future:
        if self._stopped:
            raise Unavailable("the log is shutting down")
        if job.items:
            count = len(job.items)
            with self._count_lock:
                self._submitted += count
            job.future.add_done_callback(lambda _f: self._count_settled(count))
        self._queue.put(job)
        return job.future

    # --- the writer thread ---
    def _run(self) -> None:
        self._recover_index()
        while self._process(self._queue.get()):
            pass

    def _process(self, first: _Job | object) -> bool:
        """Handle one queued item and everything waiting behind it (one group
        commit); False once told to stop."""
        if first is _STOP:
            self.indexer.stop()
            return False
        jobs, stop = drain(self._queue, first, stop=_STOP, cap=self.max_commit_events,
                           size=lambda job: len(job.items or ()))
        appends = [job for job in jobs if job.items is not None]
        if appends:
            self._wait_for_index()
            self._commit(appends)
        for job in jobs:
            if job.items is None:
                self._sign(job)
        if stop:
            self.indexer.stop()
            return False
        return True

    def _recover_index(self) -> None:
        """Queue for indexing what the log holds beyond the index (after a crash)."""
        end = self.tree.size
        for start in range(self.indexed_size, end, RECOVERY_CHUNK):
            entries = self.store.entries(start, min(end, start + RECOVERY_CHUNK))
            self._await_index(start, [entry_row(orjson.loads(data), data) for _, data in entries])
            self._wait_for_index()

    def _await_index(self, first_index: int, rows: Sequence[EntryRow]) -> None:
        self._unindexed_rows += len(rows)
        keys = self._unindexed_keys
        for offset, row in enumerate(rows):
            keys[(row.service, row.event_id)] = first_index + offset
        self.indexer.submit(first_index, rows)

    def _wait_for_index(self) -> None:
        """Forget the keys of indexed rows; wait while too many rows wait for the index."""
        while True:
            for _, rows in self.indexer.take_indexed():
                self._unindexed_rows -= len(rows)
                for row in rows:
                    self._unindexed_keys.pop((row.service, row.event_id), None)
            if self._unindexed_rows < MAX_INDEX_LAG:
                return
            self.indexer.wait_progress(0.5)

    def _commit(self, jobs: list[_Job]) -> None:
        started = time.perf_counter()
        snapshot = self.tree.copy()
        first_index = self.tree.size
        try:
            with self.store.transaction() as tx:
                results, rows = self._assign(jobs, tx.existing_indexes(self._unknown_rows(jobs)))
                if rows:
                    tx.append_entries(first_index, rows)
                    self.tree.extend(row.leaf_hash for row in rows)
                    tx.put_tiles(self.tree.take_dirty_tiles())
        except Exception as exc:
            self.tree = snapshot
            log.error("commit failed", extra={"error": str(exc)})
            failure = Unavailable(f"the log could not commit: {exc}")
            for job in jobs:
                _settle(job.future, error=failure)
            return
        if rows:
            self._await_index(first_index, rows)
        if self.observe_commit:
            self.observe_commit(len(rows), time.perf_counter() - started)
        for job, result in zip(jobs, results, strict=True):
            _settle(job.future, result)
        for listener in self.listeners:
            try:
                listener(first_index, rows)
            except Exception:
                log.exception("commit listener failed")

    def _unknown_rows(self, jobs: list[_Job]) -> list[EntryRow]:
        """Rows with producer-given keys not among the rows waiting for the index (one
        row per key)."""
        waiting = self._unindexed_keys
        rows = {
            key: p.row
            for job in jobs
            for p in job.items or ()
            if not p.fresh_id and (key := (p.row.service, p.row.event_id)) not in waiting
        }
        return list(rows.values())

    def _assign(
        self, jobs: list[_Job], stored: dict[tuple[str, str], int]
    ) -> tuple[list[list[Sequenced]], list[EntryRow]]:
        next_index = self.tree.size
        waiting = self._unindexed_keys
        # Keys of this group; waiting and stored keys are looked up in place: copying
        # the (up to MAX_INDEX_LAG) waiting keys per commit would cost more than the commit.
        group: dict[tuple[str, str], int] = {}
        rows: list[EntryRow] = []
        results: list[list[Sequenced]] = []
        for job in jobs:
            answers = []
            for prepared in job.items or ():
                row = prepared.row
                key = (row.service, row.event_id)
                index = None
                if not prepared.fresh_id:
                    index = group.get(key)
                    if index is None:
                        index = waiting.get(key)
                        if index is None:
                            index = stored.get(key)
                if index is not None:
                    answers.append(Sequenced(index, duplicate=True))
                    continue
                index = next_index + len(rows)
                rows.append(row)
                group[key] = index
                answers.append(Sequenced(index, duplicate=False))
            results.append(answers)
        return results, rows

    def _sign(self, job: _Job) -> None:
        latest = self.latest_checkpoint
        if latest is not None and latest.size == self.tree.size:
            _settle(job.future, latest)
            return
        size, root = self.tree.size, self.tree.root()
        note = sign_checkpoint(Checkpoint(self.signer.name, size, root), self.signer)
        record = CheckpointRecord(size, root, note, format_time(datetime.now(UTC)))
        try:
            with self.store.transaction(durable=True) as tx:
                tx.add_checkpoint(record)
        except Exception as exc:
            _settle(job.future, error=Unavailable(f"could not store a checkpoint: {exc}"))
            return
        self.latest_checkpoint = record
        _settle(job.future, record)
