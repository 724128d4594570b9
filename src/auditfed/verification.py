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

The log is checked in chunks of whole tiles. For a local store, worker processes
read a chunk, hash its leaves, compare them with the stored level-0 tiles and hash
each whole tile up to its root; this process continues the tree from those roots
(O(n / 256) work), compares the tiles above level 0 and takes the roots at
checkpoint sizes (a tile holding one comes as its leaves).
"""

from __future__ import annotations

import gc
import multiprocessing
import os
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import partial
from operator import itemgetter
from typing import Any, Protocol

from auditfed.errors import SignatureError, VerificationError
from auditfed.ledger import (
    HASH_SIZE,
    TILE_HEIGHT,
    TILE_WIDTH,
    Checkpoint,
    TileReader,
    TreeRebuilder,
    Verifier,
    leaf_hash,
    verify_checkpoint,
)
from auditfed.ledger.hashing import hash_up
from auditfed.ledger.rebuild import compare_tile

CHUNK = 32 * TILE_WIDTH  # leaves per task: whole tiles, so that tasks split no tile
WORKERS = max(1, min(4, os.cpu_count() or 1))
TILE_BYTES = TILE_WIDTH * HASH_SIZE


class VerifiableLog(Protocol):
    def size(self) -> int: ...

    #: A store URL when the log is local: leaves are then hashed in parallel processes.
    store_url: str | None

    def checkpoint_notes(self) -> list[str]: ...

    def entries(self, start: int, end: int) -> Iterator[tuple[int, bytes]]: ...

    def retained_from(self) -> int:
        """Entries below this index were removed by retention (0: none were)."""
        ...

    @property
    def tile_reader(self) -> TileReader | None: ...


@dataclass
class Report:
    entries: int = 0
    checkpoints: int = 0
    #: Entries below this index were removed by retention: checked by their stored
    #: leaf hashes (the tree and the signed roots), not by their bytes.
    removed: int = 0
    bad_index: int | None = None
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "entries": self.entries, "checkpoints": self.checkpoints,
                "removed_by_retention": self.removed, "bad_index": self.bad_index,
                "problem": self.problem}


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
        report.removed = log.retained_from()
        report.entries = _verify_entries(log, checkpoints, report.removed, progress)
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
    log: VerifiableLog,
    checkpoints: list[Checkpoint],
    removed: int,
    progress: Callable[[int, int | None], None],
) -> int:
    size = max([log.size(), *(cp.size for cp in checkpoints)])
    checker = _TreeChecker(checkpoints, log.tile_reader)
    tasks = _tasks(size, [cp.size for cp in checkpoints], removed)
    chunks = (
        _checked_in_workers(log.store_url, tasks) if log.store_url else _checked_here(log, tasks)
    )
    for checked in chunks:
        checker.feed(checked)
        progress(checker.size, size)
    return checker.size


_Task = tuple[int, int, Sequence[int], int]
"""Leaves ``[start, stop)`` to check, the checkpoint sizes strictly inside, and the
first leaf whose entry was not removed by retention."""


def _tasks(size: int, cuts: list[int], removed: int) -> Iterator[_Task]:
    for start in range(0, size, CHUNK):
        stop = min(size, start + CHUNK)
        yield start, stop, cuts[bisect_right(cuts, start):bisect_left(cuts, stop)], removed


@dataclass(frozen=True, slots=True)
class _Checked:
    """A chunk of leaves as checked where they were read and hashed.

    ``pieces`` continue the tree, left to right: ``(TILE_HEIGHT, root)`` for a whole
    tile whose stored level-0 tile matched, ``(0, leaf hash)`` for each leaf of a
    tile that is partial or holds a checkpoint size (a root is taken there). They
    stop before the tile of the first fault, ``(index, problem)``.
    """

    pieces: list[tuple[int, bytes]]
    fault: tuple[int, str] | None


def _check_chunk(rows: list[tuple[int, bytes]], task: _Task, tiles: TileReader | None) -> _Checked:
    """Hash a chunk's leaves, compare them with the stored level-0 tiles, and hash
    whole tiles up to their roots: nearly all the work, done where the rows are
    read, so that one hash per tile travels on instead of 256."""
    start, stop, cuts, _ = task
    # Leaves below ``kept`` lost their entries to retention: their stored leaf hashes
    # stand in (the tree above them and the signed roots still check them). ``rows``
    # start at ``kept``: entries a prune cut short left below it are not read.
    kept = _first_kept(task)
    present = _run_length(rows, kept)
    stored = tiles.read_tiles(_level0_keys(start, kept + present)) if tiles is not None else {}
    leaves, lost = _removed_leaves(stored, start, kept)
    if lost is None:
        leaves += b"".join([leaf_hash(data) for _, data in rows[:present]])
    roots = hash_up(leaves[: len(leaves) // TILE_BYTES * TILE_BYTES], TILE_HEIGHT)
    cut_tiles = {cut // TILE_WIDTH for cut in cuts if cut % TILE_WIDTH}
    pieces: list[tuple[int, bytes]] = []
    for number, offset in enumerate(range(0, len(leaves), TILE_BYTES)):
        key = (0, start // TILE_WIDTH + number)
        tile = leaves[offset:offset + TILE_BYTES]
        if tiles is not None and (mismatch := compare_tile(key, tile, stored.get(key))) is not None:
            return _Checked(pieces, (mismatch.leaf_index, f"entry {mismatch.leaf_index}: {mismatch.detail}"))
        if len(tile) == TILE_BYTES and key[1] not in cut_tiles:
            pieces.append((TILE_HEIGHT, roots[number * HASH_SIZE:(number + 1) * HASH_SIZE]))
        else:
            pieces += [(0, tile[i:i + HASH_SIZE]) for i in range(0, len(tile), HASH_SIZE)]
    if lost is not None:
        return _Checked(pieces, (lost, f"entry {lost} was removed by retention and its leaf hash "
                                       "is not stored either"))
    missing = kept + present
    return _Checked(pieces, None if missing == stop else (missing, f"entry {missing} is missing"))


def _first_kept(task: _Task) -> int:
    """The first leaf of the task whose entry retention did not remove."""
    start, stop, _, removed = task
    return min(stop, max(start, removed))


def _removed_leaves(stored: dict[tuple[int, int], bytes], start: int, stop: int) -> tuple[bytes, int | None]:
    """The stored leaf hashes of leaves ``[start, stop)``, and the first one missing."""
    leaves = bytearray()
    for tile in range(start // TILE_WIDTH, -(-stop // TILE_WIDTH)):
        first, end = max(start, tile * TILE_WIDTH), min(stop, (tile + 1) * TILE_WIDTH)
        offset = first - tile * TILE_WIDTH
        hashes = stored.get((0, tile), b"")[offset * HASH_SIZE:(offset + end - first) * HASH_SIZE]
        if len(hashes) < (end - first) * HASH_SIZE:
            whole = len(hashes) // HASH_SIZE
            return bytes(leaves + hashes[:whole * HASH_SIZE]), first + whole
        leaves += hashes
    return bytes(leaves), None


def _run_length(rows: list[tuple[int, bytes]], start: int) -> int:
    """How many of ``rows`` count up from index ``start`` without a gap (all, unless entries are missing)."""
    indexes = list(map(itemgetter(0), rows))
    if indexes == list(range(start, start + len(indexes))):
        return len(indexes)
    return next(n for n, index in enumerate(indexes) if index != start + n)


def _level0_keys(start: int, stop: int) -> list[tuple[int, int]]:
    return [(0, tile) for tile in range(start // TILE_WIDTH, -(-stop // TILE_WIDTH))]


def _checked_here(log: VerifiableLog, tasks: Iterator[_Task]) -> Iterator[_Checked]:
    """Chunks checked in this process, reading entries through ``log`` (e.g. a remote API)."""
    for task in tasks:
        yield _check_chunk(list(log.entries(_first_kept(task), task[1])), task, log.tile_reader)


# For a local store, chunks are checked in worker processes (each with its own
# connection), while this process continues the tree above the tiles' roots.
_worker_stores: dict[str, Any] = {}


def _check_stored_chunk(store_url: str, task: _Task) -> _Checked:
    from auditfed.store import open_store

    store = _worker_stores.get(store_url)
    if store is None:
        store = _worker_stores[store_url] = open_store(store_url)
    return _check_chunk(store.entries(_first_kept(task), task[1]), task, store)


def _checked_in_workers(store_url: str, tasks: Iterator[_Task]) -> Iterator[_Checked]:
    # fork: workers start in milliseconds (spawn would re-import auditfed in each,
    # costing more than hashing a million leaves); they touch nothing but their own
    # store connection and hashlib. gc.freeze: the heap they inherit (the caller's,
    # perhaps large) is not theirs to scan; scanning it cost a quarter of the time.
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    context = multiprocessing.get_context(method)
    with ProcessPoolExecutor(max_workers=WORKERS, mp_context=context, initializer=gc.freeze) as pool:
        yield from pool.map(partial(_check_stored_chunk, store_url), tasks)


class _TreeChecker:
    """Continues the tree from checked chunks; checks the stored tiles above level 0
    (level 0 is checked with the chunks) and the signed roots."""

    def __init__(self, checkpoints: list[Checkpoint], tiles: TileReader | None) -> None:
        self.rebuilder = TreeRebuilder()
        self.pending = list(checkpoints)
        self.tiles = tiles
        self.last_good = 0
        self._check_roots([(cp, self.rebuilder.root()) for cp in self._reached()])

    @property
    def size(self) -> int:
        return self.rebuilder.size

    def _reached(self) -> list[Checkpoint]:
        reached = []
        while self.pending and self.pending[0].size == self.rebuilder.size:
            reached.append(self.pending.pop(0))
        return reached

    def feed(self, checked: _Checked) -> None:
        """Feed a chunk's pieces, taking the root at each checkpoint size. Tile faults
        are raised before root faults: a tile mismatch names the exact leaf, a root
        mismatch only bounds it."""
        roots: list[tuple[Checkpoint, bytes]] = []
        for height, node in checked.pieces:
            if height:
                self.rebuilder.feed_tile_root(node)
            else:
                self.rebuilder.feed((node,))
            roots += [(cp, self.rebuilder.root()) for cp in self._reached()]
        if self.tiles is not None:
            mismatch = self.rebuilder.check(self.tiles)
            if mismatch is not None:
                raise _Fault(mismatch.leaf_index, f"entry {mismatch.leaf_index}: {mismatch.detail}")
        if checked.fault is not None:
            raise _Fault(*checked.fault)
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
