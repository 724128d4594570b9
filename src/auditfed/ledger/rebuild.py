"""Tile-by-tile verification of a stored log against its leaves (C2SP tlog-tiles layout).

:class:`TreeRebuilder` recomputes, from the leaf hashes in order, every tile that a
:class:`~auditfed.ledger.tiles.TreeAppender` would have written, and compares them
with the stored tiles batch by batch. A difference is reported as the first leaf
index it concerns: a stored leaf hash that differs names its own leaf; a stored
interior node that differs, with every hash below it intact, names the first leaf
of its subtree.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from auditfed.ledger.hashing import HASH_SIZE
from auditfed.ledger.tiles import TILE_HEIGHT, TILE_WIDTH, TileKey, TileReader, TreeAppender

__all__ = ["TileMismatch", "TreeRebuilder", "compare_tile", "first_fault"]


@dataclass(frozen=True, slots=True)
class TileMismatch:
    """A stored tile hash that differs from the recomputed one."""

    key: TileKey
    """The tile ``(level, index)``."""
    node_index: int
    """Index of the differing node at tree height ``8 * level``."""
    leaf_index: int
    """First leaf under that node: the leaf itself on level 0."""
    detail: str

    @property
    def level(self) -> int:
        return self.key[0]

    @property
    def leaf_end(self) -> int:
        """End (exclusive) of the leaves under the differing node."""
        return (self.node_index + 1) << (TILE_HEIGHT * self.level)


def compare_tile(key: TileKey, expected: bytes, stored: bytes | None) -> TileMismatch | None:
    """Compare a recomputed tile with the stored one; a longer stored tile is fine."""
    level, index = key
    first_node = index * TILE_WIDTH
    if stored is None:
        return _mismatch(key, first_node, "tile is not stored")
    if stored.startswith(expected):
        return None  # the common case, in one comparison
    for offset in range(0, len(expected), HASH_SIZE):
        if stored[offset : offset + HASH_SIZE] != expected[offset : offset + HASH_SIZE]:
            what = "leaf hash" if level == 0 else f"node hash at height {TILE_HEIGHT * level}"
            reason = "missing" if offset >= len(stored) else "differs"
            return _mismatch(key, first_node + offset // HASH_SIZE, f"stored {what} {reason}")
    return None


def _mismatch(key: TileKey, node_index: int, detail: str) -> TileMismatch:
    leaf_index = node_index << (TILE_HEIGHT * key[0])
    return TileMismatch(key, node_index, leaf_index, f"tile {key}: {detail}")


def first_fault(mismatches: Iterable[TileMismatch]) -> TileMismatch | None:
    """Return the mismatch naming the earliest leaf.

    A mismatch of an interior node is explained by (and yields to) a lower-level
    mismatch among the leaves it covers.
    """
    found = sorted(mismatches, key=lambda m: (m.level, m.leaf_index))
    faults = [
        m
        for m in found
        if not any(low.level < m.level and m.leaf_index <= low.leaf_index < m.leaf_end for low in found)
    ]
    return min(faults, key=lambda m: (m.leaf_index, m.level), default=None)


class TreeRebuilder:
    """Recompute a log's tiles from its leaf hashes and check them against storage.

    Feed leaf hashes in order with :meth:`feed`, then call :meth:`check` (for example
    every few thousand leaves): it compares every tile changed since the last check
    with the stored one, in one tile read.
    """

    def __init__(self) -> None:
        self._appender = TreeAppender.empty()

    @property
    def size(self) -> int:
        """Number of leaves fed so far."""
        return self._appender.size

    def root(self) -> bytes:
        """Root hash of the leaves fed so far."""
        return self._appender.root()

    def feed(self, leaf_hashes: Iterable[bytes]) -> None:
        """Add the next leaf hashes, in log order."""
        self._appender.extend(leaf_hashes)

    def feed_tile_root(self, root: bytes) -> None:
        """Add the next whole tile of leaves, at a tile boundary, by its root.

        The caller has compared that level-0 tile itself (see
        :meth:`TreeAppender.append_tile_root`): :meth:`check` covers the levels above.
        """
        self._appender.append_tile_root(root)

    def expected_tiles(self) -> dict[TileKey, bytes]:
        """Return (and forget) the recomputed tiles changed since the last call."""
        return self._appender.take_dirty_tiles()

    def check(self, reader: TileReader) -> TileMismatch | None:
        """Compare the tiles changed since the last check with the stored ones."""
        expected = self.expected_tiles()
        if not expected:
            return None
        stored: Mapping[TileKey, bytes] = reader.read_tiles(sorted(expected))
        return first_fault(
            m for key, tile in expected.items() if (m := compare_tile(key, tile, stored.get(key))) is not None
        )
