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
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from auditfed.errors import SignatureError, VerificationError
from auditfed.ledger import Checkpoint, TileReader, TreeRebuilder, Verifier, verify_checkpoint

CHUNK = 8192


class VerifiableLog(Protocol):
    def size(self) -> int: ...

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
    expected = 0
    stream = log.entries(0, size)
    while expected < size:
        stop = min(size, expected + CHUNK)
        leaves = []
        for index, data in _take(stream, stop - expected):
            if index != expected:
                raise _Fault(expected, f"entry {expected} is missing")
            leaves.append(hashlib.sha256(b"\x00" + data).digest())
            expected += 1
        if expected < stop:
            raise _Fault(expected, f"entry {expected} is missing (the log ends early)")
        checker.feed(leaves)
        progress(expected, size)
    return expected


def _take(stream: Iterator[tuple[int, bytes]], count: int) -> Iterator[tuple[int, bytes]]:
    for _ in range(count):
        item = next(stream, None)
        if item is None:
            return
        yield item


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
