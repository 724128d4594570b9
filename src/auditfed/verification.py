"""Verifying a whole log: every leaf, every stored tile, every signed checkpoint.

``auditfed verify`` recomputes each entry's leaf hash (RFC 6962) from the stored
bytes, rebuilds the tree tile by tile and compares it with the stored tiles (which
serve every proof), checks every checkpoint's Ed25519 signature, and checks that the
rebuilt tree's root at each checkpoint's size is the signed root. The first fault
is named by log index:

- an entry whose bytes were changed: its leaf hash differs from the stored one;
- a deleted entry: the index is missing;
- swapped entries: the first of them differs;
- entries and tiles rewritten together: the signed root no longer matches, and the
  fault lies after the last checkpoint that still matches.

Through the API (``--url``) there are no tiles to compare; entries are checked
against the latest signed checkpoint.
"""

from __future__ import annotations

import hashlib
import itertools
import multiprocessing
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

from auditfed.errors import SignatureError, VerificationError
from auditfed.ledger import Checkpoint, TileReader, TreeRebuilder, Verifier, verify_checkpoint

CHUNK = 8192
WORKERS = max(1, min(4, os.cpu_count() or 1))


class VerifiableLog(Protocol):
    def size(self) -> int: ...

    #: A store URL when the log is local: leaves are then hashed in parallel processes.
    store_url: str | None

    def checkpoint_notes(self) -> list[str]: ...

    def entries(self, start: int, end: int) -> Iterator[tuple[int, bytes]]: ...

    @property
    def tile_reader(self) -> TileReader | None: ...


@dataclass
class Report:
    entries: int = 0
    checkpoints: int = 0
    bad_index: int | None = None
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "entries": self.entries, "checkpoints": self.checkpoints,
                "bad_index": self.bad_index, "problem": self.problem}


class _Fault(Exception):
    def __init__(self, index: int | None, problem: str) -> None:
        super().__init__(problem)
        self.index = index
        self.problem = problem


def verify_log(
    log: VerifiableLog,
    verifier: Verifier,
    progress: Callable[[int, int | None], None] = lambda done, total: None,
) -> Report:
    report = Report()
    try:
        checkpoints = _verified_checkpoints(log, verifier)
        report.checkpoints = len(checkpoints)
        report.entries = _verify_entries(log, checkpoints, progress)
    except _Fault as fault:
        report.bad_index, report.problem = fault.index, fault.problem
    return report


def _verified_checkpoints(log: VerifiableLog, verifier: Verifier) -> list[Checkpoint]:
    checkpoints = []
    for note in log.checkpoint_notes():
        try:
            checkpoints.append(verify_checkpoint(note, verifier))
        except (SignatureError, VerificationError) as exc:
            raise _Fault(None, f"a stored checkpoint does not verify: {exc.detail}") from None
    return sorted(checkpoints, key=lambda cp: cp.size)


def _verify_entries(
    log: VerifiableLog, checkpoints: list[Checkpoint], progress: Callable[[int, int | None], None]
) -> int:
    size = max([log.size(), *(cp.size for cp in checkpoints)])
    checker = _TreeChecker(checkpoints, log.tile_reader)
    chunks = _parallel_leaf_hashes(log.store_url, size) if log.store_url else _leaf_hashes(log, size)
    done = 0
    for leaves in chunks:
        checker.feed(leaves)
        done += len(leaves)
        progress(done, size)
    return done


def _leaf_hashes(log: VerifiableLog, size: int) -> Iterator[list[bytes]]:
    """Leaf hashes in chunks, reading entries through ``log`` (e.g. a remote API)."""
    stream = log.entries(0, size)
    for start in range(0, size, CHUNK):
        yield _hash_rows(stream, start, min(size, start + CHUNK))


def _hash_rows(rows: Iterator[tuple[int, bytes]], start: int, stop: int) -> list[bytes]:
    leaves = []
    expected = start
    for index, data in rows:
        if index != expected:
            raise _Fault(expected, f"entry {expected} is missing")
        leaves.append(hashlib.sha256(b"\x00" + data).digest())
        expected += 1
        if expected == stop:
            return leaves
    raise _Fault(expected, f"entry {expected} is missing (the log ends early)")


# Leaf hashing is most of the work; for a local store it runs in worker processes
# (each with its own connection), while this process rebuilds and checks the tree.
_worker_stores: dict[str, Any] = {}


def _hash_chunk(store_url: str, start: int, stop: int) -> bytes | tuple[int, str]:
    from auditfed.store import open_store

    store = _worker_stores.get(store_url)
    if store is None:
        store = _worker_stores[store_url] = open_store(store_url)
    try:
        rows = iter(store.entries(start, stop))
        return b"".join(_hash_rows(rows, start, stop))
    except _Fault as fault:
        return (fault.index or 0, fault.problem)


def _parallel_leaf_hashes(store_url: str, size: int) -> Iterator[list[bytes]]:
    # fork: workers start in milliseconds (spawn would re-import auditfed in each,
    # costing more than hashing a million leaves); they touch nothing but their own
    # store connection and hashlib.
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    context = multiprocessing.get_context(method)
    with ProcessPoolExecutor(max_workers=WORKERS, mp_context=context) as pool:
        starts = range(0, size, CHUNK)
        results = pool.map(
            _hash_chunk, itertools.repeat(store_url), starts,
            (min(size, s + CHUNK) for s in starts), chunksize=1,
        )
        for result in results:
            if isinstance(result, tuple):
                raise _Fault(*result)
            yield [result[i:i + 32] for i in range(0, len(result), 32)]


class _TreeChecker:
    """Rebuilds the tree from leaf hashes; checks stored tiles and signed roots."""

    def __init__(self, checkpoints: list[Checkpoint], tiles: TileReader | None) -> None:
        self.rebuilder = TreeRebuilder()
        self.pending = list(checkpoints)
        self.tiles = tiles
        self.last_good = 0
        self._check_roots([(cp, self.rebuilder.root()) for cp in self._reached()])

    def _reached(self) -> list[Checkpoint]:
        reached = []
        while self.pending and self.pending[0].size == self.rebuilder.size:
            reached.append(self.pending.pop(0))
        return reached

    def feed(self, leaves: list[bytes]) -> None:
        """Feed leaves, pausing at checkpoint sizes to take the root there. Tiles are
        compared before roots: a tile mismatch names the exact leaf, a root mismatch
        only bounds it."""
        roots: list[tuple[Checkpoint, bytes]] = []
        position = 0
        end = self.rebuilder.size + len(leaves)
        while position < len(leaves):
            stop = self.pending[0].size if self.pending and self.pending[0].size <= end else end
            step = stop - self.rebuilder.size
            self.rebuilder.feed(leaves[position:position + step])
            position += step
            roots += [(cp, self.rebuilder.root()) for cp in self._reached()]
        if self.tiles is not None:
            mismatch = self.rebuilder.check(self.tiles)
            if mismatch is not None:
                raise _Fault(mismatch.leaf_index, f"entry {mismatch.leaf_index}: {mismatch.detail}")
        self._check_roots(roots)

    def _check_roots(self, roots: list[tuple[Checkpoint, bytes]]) -> None:
        for checkpoint, root in roots:
            if root != checkpoint.root:
                raise _Fault(
                    self.last_good,
                    f"the entries do not match the checkpoint signed at size {checkpoint.size}: "
                    f"an entry at or after index {self.last_good} was changed",
                )
            self.last_good = checkpoint.size
