"""verify_log across many chunks: whole-tile roots, checkpoints inside tiles, and
the first fault named exactly, whether chunks are checked in this process (a log
read through an API) or in worker processes (a local store).

A small CHUNK splits 70,000 leaves (three tile levels) into 18 chunks. Each fault is
made on an in-memory log; the worker variant copies the altered log into SQLite.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from itertools import groupby
from pathlib import Path

import pytest

from auditfed import verification
from auditfed.ledger import Checkpoint, Signer, TreeAppender, leaf_hash, sign_checkpoint, verify_checkpoint
from auditfed.store import open_store
from auditfed.store.base import CheckpointRecord, EntryRow, Store
from auditfed.verification import Report, verify_log

from .reference import MemoryTiles

SIZE = 70_000
CHUNK = 4096
#: Checkpoint sizes: inside a tile of the first chunk, at a chunk boundary, inside a
#: tile, at the first level-2 node's end, and at the end (inside the last, partial tile).
CUTS = (700, 8192, 30_001, 65_536, SIZE)
SIGNER = Signer.generate("auditfed.test/log")


@dataclass
class MemoryLog:
    """A log in memory with the :class:`~auditfed.verification.VerifiableLog` interface."""

    data: dict[int, bytes]
    notes: list[str]
    tiles: MemoryTiles
    store_url: str | None = None
    #: Entries below this index were removed by retention.
    removed: int = 0

    def size(self) -> int:
        return max(self.data, default=-1) + 1

    def retained_from(self) -> int:
        return self.removed

    def checkpoint_notes(self) -> list[str]:
        return self.notes

    def entries(self, start: int, end: int) -> Iterator[tuple[int, bytes]]:
        return ((i, self.data[i]) for i in sorted(self.data) if start <= i < end)

    @property
    def tile_reader(self) -> MemoryTiles:
        return self.tiles


@dataclass
class StoredLog:
    """A log in a store, checked in worker processes."""

    store: Store
    store_url: str

    def size(self) -> int:
        return self.store.size()

    def checkpoint_notes(self) -> list[str]:
        return [record.note for record in self.store.checkpoints()]

    def entries(self, start: int, end: int) -> Iterator[tuple[int, bytes]]:
        return iter(self.store.entries(start, end))

    def retained_from(self) -> int:
        return self.store.retained_from()

    @property
    def tile_reader(self) -> Store:
        return self.store


def tiles_of(data: dict[int, bytes], sizes: tuple[int, ...] = CUTS) -> tuple[MemoryTiles, list[bytes]]:
    """The tiles a sequencer stores for ``data``, and the roots at ``sizes``."""
    return tiles_of_hashes([leaf_hash(data[i]) for i in range(len(data))], sizes)


def tiles_of_hashes(hashes: list[bytes], sizes: tuple[int, ...] = CUTS) -> tuple[MemoryTiles, list[bytes]]:
    tree, tiles, roots = TreeAppender.empty(), MemoryTiles(), []
    for start, stop in zip((0, *sizes), sizes, strict=False):
        tree.extend(hashes[start:stop])
        tiles.update(tree.take_dirty_tiles())
        roots.append(tree.root())
    return tiles, roots


@pytest.fixture(scope="module")
def intact() -> MemoryLog:
    data = {i: f'{{"n": {i}}}'.encode() for i in range(SIZE)}
    tiles, roots = tiles_of(data)
    notes = [sign_checkpoint(Checkpoint(SIGNER.name, s, r), SIGNER) for s, r in zip(CUTS, roots, strict=True)]
    return MemoryLog(data, notes, tiles)


def copy_to_store(log: MemoryLog, path: Path) -> StoredLog:
    store = open_store(f"sqlite:///{path}")
    with store.transaction() as tx:
        for run in runs(sorted(log.data)):
            tx.append_entries(run[0], [entry_row(log.data[i]) for i in run])
        tx.put_tiles(log.tiles)
        for note in log.notes:
            cp = verify_checkpoint(note, SIGNER.verifier())
            tx.add_checkpoint(CheckpointRecord(cp.size, cp.root, note, "2026-01-01T00:00:00Z"))
    if log.removed:
        store.set_meta("retained_from", str(log.removed))
    return StoredLog(store, store.url)


def runs(indexes: list[int]) -> Iterator[list[int]]:
    """Consecutive indexes, split where entries are missing."""
    for _, run in groupby(enumerate(indexes), lambda pair: pair[1] - pair[0]):
        yield [index for _, index in run]


def entry_row(data: bytes) -> EntryRow:
    return EntryRow(data, leaf_hash(data), "svc", "id", "2026-01-01T00:00:00Z", "a.b", "u", None, None, None, None,
                    "success")


@pytest.fixture(params=["in-process", "workers"])
def check(request: pytest.FixtureRequest, intact: MemoryLog, tmp_path: Path,
          monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[Callable[[MemoryLog], None]], Report]]:
    """Verify a copy of the intact log after ``alter`` has altered it."""
    monkeypatch.setattr(verification, "CHUNK", CHUNK)
    stores: list[Store] = []

    def run(alter: Callable[[MemoryLog], None]) -> Report:
        log = replace(intact, data=dict(intact.data), tiles=MemoryTiles(intact.tiles))
        alter(log)
        if request.param == "in-process":
            return verify_log(log, SIGNER.verifier())
        stored = copy_to_store(log, tmp_path / "log.db")
        stores.append(stored.store)
        return verify_log(stored, SIGNER.verifier())

    yield run
    for store in stores:
        store.close()


# --- ways to alter a log ---------------------------------------------------------


def change(index: int) -> Callable[[MemoryLog], None]:
    def alter(log: MemoryLog) -> None:
        log.data[index] += b" "
    return alter


def delete(index: int) -> Callable[[MemoryLog], None]:
    def alter(log: MemoryLog) -> None:
        del log.data[index]
    return alter


def swap(first: int, second: int) -> Callable[[MemoryLog], None]:
    def alter(log: MemoryLog) -> None:
        log.data[first], log.data[second] = log.data[second], log.data[first]
    return alter


def flip_node(level: int, node: int) -> Callable[[MemoryLog], None]:
    """Change one stored hash: a leaf hash on level 0, else an interior node."""
    def alter(log: MemoryLog) -> None:
        key = (level, node // 256)
        tile = bytearray(log.tiles[key])
        tile[node % 256 * 32] ^= 1
        log.tiles[key] = bytes(tile)
    return alter


def drop_tile(level: int, index: int) -> Callable[[MemoryLog], None]:
    def alter(log: MemoryLog) -> None:
        del log.tiles[(level, index)]
    return alter


def rewrite(index: int) -> Callable[[MemoryLog], None]:
    """Change an entry and every tile to match: only the signed roots still tell."""
    def alter(log: MemoryLog) -> None:
        log.data[index] += b" "
        log.tiles = tiles_of(log.data)[0]
    return alter


def retain_from(index: int, *, left: int = 0) -> Callable[[MemoryLog], None]:
    """Retention removed the entries below ``index`` (``left`` of them, just below it,
    are still there: a prune cut short)."""
    def alter(log: MemoryLog) -> None:
        for i in range(index - left):
            del log.data[i]
        log.removed = index
    return alter


def forge_leaf_hash(index: int) -> Callable[[MemoryLog], None]:
    """Change a stored leaf hash and every tile to match: only the signed roots still tell."""
    def alter(log: MemoryLog) -> None:
        level0 = b"".join(log.tiles[(0, n)] for n in range(-(-SIZE // 256)))
        hashes = [level0[i:i + 32] for i in range(0, len(level0), 32)]
        hashes[index] = bytes(32)
        log.tiles = tiles_of_hashes(hashes)[0]
    return alter


def both(*alterations: Callable[[MemoryLog], None]) -> Callable[[MemoryLog], None]:
    def alter(log: MemoryLog) -> None:
        for each in alterations:
            each(log)
    return alter


# --- tests -----------------------------------------------------------------------


def test_an_intact_log_verifies(check: Callable[..., Report]) -> None:
    report = check(lambda log: None)
    assert report.ok, report.problem
    assert (report.entries, report.checkpoints) == (SIZE, len(CUTS))


@pytest.mark.parametrize(
    ("alter", "index", "problem"),
    [
        # a changed entry: in a whole tile, in tiles holding checkpoint sizes, at chunk
        # edges, in the last (partial) tile
        *[pytest.param(change(i), i, "leaf hash differs", id=f"changed-{i}")
          for i in (0, 255, 256, 699, 700, 4095, 4096, 8191, 8192, 30_000, 30_001, 65_535, 65_536, 69_888, 69_999)],
        *[pytest.param(delete(i), i, "is missing", id=f"deleted-{i}") for i in (0, 700, 4095, 4096, 50_000, 69_999)],
        pytest.param(swap(100, 30_000), 100, "leaf hash differs", id="swapped-across-chunks"),
        pytest.param(swap(8191, 8192), 8191, "leaf hash differs", id="swapped-at-a-chunk-edge"),
        pytest.param(flip_node(0, 5_000), 5_000, "leaf hash differs", id="stored-leaf-hash"),
        pytest.param(flip_node(0, 69_950), 69_950, "leaf hash differs", id="stored-leaf-hash-partial-tile"),
        pytest.param(flip_node(1, 17), 17 * 256, "node hash at height 8", id="stored-level-1-node"),
        pytest.param(flip_node(1, 272), 272 * 256, "node hash at height 8", id="stored-level-1-node-tile-1"),
        pytest.param(flip_node(2, 0), 0, "node hash at height 16", id="stored-level-2-node"),
        pytest.param(drop_tile(0, 40), 40 * 256, "tile is not stored", id="level-0-tile-deleted"),
        pytest.param(drop_tile(1, 1), 65_536, "tile is not stored", id="level-1-tile-deleted"),
        # two faults in one chunk: the first is named, whatever its kind
        pytest.param(both(flip_node(1, 17), change(5_000)), 17 * 256, "node hash", id="node-before-leaf"),
        pytest.param(both(change(4_400), flip_node(1, 18)), 4_400, "leaf hash", id="leaf-before-node"),
        pytest.param(both(change(5_000), delete(6_000)), 5_000, "leaf hash", id="leaf-before-missing"),
        pytest.param(both(delete(5_000), change(6_000)), 5_000, "is missing", id="missing-before-leaf"),
        pytest.param(both(delete(5_000), flip_node(0, 4_200)), 4_200, "leaf hash", id="tile-before-missing"),
        # entries and tiles rewritten together: the fault lies after the last good checkpoint
        pytest.param(rewrite(10), 0, "signed at size 700", id="rewritten-before-first-checkpoint"),
        pytest.param(rewrite(40_000), 30_001, "signed at size 65536", id="rewritten"),
        pytest.param(rewrite(69_999), 65_536, "signed at size 70000", id="rewritten-last"),
        # a log pruned by retention: what was removed is checked by its stored leaf hashes
        pytest.param(both(retain_from(5_000), change(6_000)), 6_000, "leaf hash differs", id="kept-entry-changed"),
        pytest.param(both(retain_from(5_000), delete(6_000)), 6_000, "is missing", id="kept-entry-deleted"),
        pytest.param(both(retain_from(5_000), flip_node(0, 4_200)), 4_096, "node hash at height 8",
                     id="removed-leaf-hash-changed"),
        pytest.param(both(retain_from(5_000), forge_leaf_hash(100)), 0, "signed at size 700",
                     id="removed-leaf-hash-and-tiles-forged"),
        pytest.param(both(retain_from(50_000), forge_leaf_hash(40_000)), 30_001, "signed at size 65536",
                     id="removed-leaf-hash-and-tiles-forged-later"),
        pytest.param(both(retain_from(5_000), drop_tile(0, 10)), 2_560, "removed by retention",
                     id="removed-leaves-tile-deleted"),
    ],
)
def test_the_first_fault_is_named(
    check: Callable[..., Report], alter: Callable[[MemoryLog], None], index: int, problem: str
) -> None:
    report = check(alter)
    assert not report.ok
    assert report.bad_index == index, report.problem
    assert problem in (report.problem or "")


# --- retention -------------------------------------------------------------------


@pytest.mark.parametrize("index", [1, 700, 4096, 5_000, 30_001, 69_999])
def test_a_log_pruned_by_retention_verifies_by_its_stored_leaf_hashes(
    check: Callable[..., Report], index: int
) -> None:
    report = check(retain_from(index))
    assert report.ok, report.problem
    assert (report.entries, report.checkpoints, report.removed) == (SIZE, len(CUTS), index)


def test_entries_a_prune_left_below_its_cut_are_not_read(check: Callable[..., Report]) -> None:
    report = check(both(retain_from(5_000, left=300), change(4_800)))
    assert report.ok, report.problem
