"""The indexer: writes committed entries to the query index, in its own thread.

The query index (searchable columns and the deduplication key of every entry) is
derived from the log and trails it. Its random-key B-tree inserts are the most
expensive writes the store makes, so they run in a thread of their own, in their own
transactions (for SQLite: in their own file), while the sequencer goes on
committing; SQLite and the PostgreSQL driver release the interpreter lock while they
work, so the two overlap on two cores. Under load the indexer takes everything
that waits, up to ``INDEX_BATCH`` rows, per transaction: larger batches make each
insert cheaper.

The sequencer hands over rows right after their commit and learns which ones the
index holds through :meth:`Indexer.take_indexed` (it keeps their deduplication keys
in memory until then). A failed index write is retried; rows the index never got
are re-read from the log at the next start, since the index records how far it got.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Sequence

from auditfed.batches import handle_batches
from auditfed.store.base import EntryRow, Store

log = logging.getLogger(__name__)

INDEX_BATCH = 20_000
RETRY_DELAY = 1.0

Rows = tuple[int, Sequence[EntryRow]]

_STOP = object()


class Indexer:
    def __init__(self, store: Store) -> None:
        self.store = store
        #: Entries ``[0, indexed_size)`` are in the index.
        self.indexed_size = store.indexed_size()
        self._queue: queue.SimpleQueue[Rows | object] = queue.SimpleQueue()
        self._indexed: deque[Rows] = deque()
        self._progress = threading.Event()
        self._thread = threading.Thread(target=self._run, name="auditfed-indexer", daemon=True)
        self._stopping = False

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Index everything handed over so far, then stop (retrying stops too)."""
        self._stopping = True
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join()

    def submit(self, first_index: int, rows: Sequence[EntryRow]) -> None:
        self._queue.put((first_index, rows))

    def take_indexed(self) -> list[Rows]:
        """Rows the index has committed since the last call."""
        taken = []
        while self._indexed:
            taken.append(self._indexed.popleft())
        return taken

    def wait_progress(self, timeout: float) -> None:
        """Wait until the index commits more rows (or ``timeout`` s pass)."""
        self._progress.wait(timeout)
        self._progress.clear()

    # --- the indexer thread ---
    def _run(self) -> None:
        handle_batches(self._queue, self._write, stop=_STOP, cap=INDEX_BATCH,
                       size=lambda rows: len(rows[1]))

    def _write(self, batch: list[Rows]) -> None:
        while True:
            try:
                with self.store.index_transaction() as tx:
                    for first_index, rows in batch:
                        tx.index_entries(first_index, rows)
                break
            except Exception:
                log.exception("indexing failed; retrying")
                if self._stopping:
                    return  # re-read from the log at the next start
                time.sleep(RETRY_DELAY)
        first_index, rows = batch[-1]
        self.indexed_size = first_index + len(rows)
        self._indexed.extend(batch)
        self._progress.set()
