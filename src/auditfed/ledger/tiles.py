"""The log's Merkle tree as stored tiles, in the layout of C2SP tlog-tiles.

Tiles have height 8: the tile at ``(level, index)`` holds the concatenated 32-byte
hashes of the complete tree nodes at height ``8 * level`` with node indexes
``[index * 256, index * 256 + w)``. ``w`` is 256 for a full tile; the rightmost tile
of a level is *partial* (``w < 256``) and is rewritten, whole, as it grows. Level 0
holds the leaf hashes. A node at a height that is not a multiple of 8 is not
stored: it is computed by hashing up its part of the tile one level below it.

Reading side: :func:`root_at`, :func:`inclusion_proof` and :func:`consistency_proof`
fetch only the O(log n) tiles they need, in one :meth:`TileReader.read_tiles` call.

Writing side: :class:`TreeAppender` keeps the right edge of the tree (a compact
range: the complete subtrees that make up ``[0, size)``) and the rightmost tile of
each level, so appending costs about one node hash per leaf and never re-reads.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from hashlib import sha256
from itertools import islice
from typing import Protocol, Self

from auditfed.errors import StoreError
from auditfed.ledger.hashing import HASH_SIZE, fold_subtrees, hash_up
from auditfed.ledger.tree import (
    Node,
    Range,
    complete_subtrees,
    consistency_path,
    inclusion_path,
)

__all__ = [
    "TILE_HEIGHT",
    "TILE_WIDTH",
    "TileKey",
    "TileReader",
    "TreeAppender",
    "consistency_proof",
    "inclusion_proof",
    "read_nodes",
    "root_at",
    "tile_key",
]

TILE_HEIGHT = 8
TILE_WIDTH = 1 << TILE_HEIGHT  # hashes in a full tile

TileKey = tuple[int, int]
"""``(level, index)`` of a tile."""


class TileReader(Protocol):
    """Read access to stored tiles."""

    def read_tiles(self, keys: Sequence[TileKey]) -> Mapping[TileKey, bytes]:
        """Return the stored contents of the tiles in ``keys``.

        A key that is not stored is absent from the result. A partial tile may be
        returned wider than asked for (the log has grown since): the extra hashes
        are ignored.
        """
        ...


# --- reading ---------------------------------------------------------------------


def tile_key(node: Node) -> TileKey:
    """Return the key of the tile that stores ``node`` or the nodes it is hashed from."""
    height, index = node
    level, shift = divmod(height, TILE_HEIGHT)
    return level, (index << shift) >> TILE_HEIGHT


def _node_from_tile(node: Node, tile: bytes | None) -> bytes:
    """Hash ``node`` up from the 2**shift entries of its tile below it."""
    height, index = node
    shift = height % TILE_HEIGHT
    first = (index << shift) % TILE_WIDTH
    count = 1 << shift
    data = (tile or b"")[first * HASH_SIZE : (first + count) * HASH_SIZE]
    if len(data) != count * HASH_SIZE:
        raise StoreError(f"tile {tile_key(node)} is missing or too short for node at height {height}, index {index}")
    return hash_up(data, shift)


def read_nodes(nodes: Iterable[Node], reader: TileReader) -> dict[Node, bytes]:
    """Return the hashes of complete ``nodes``, reading their tiles in one call."""
    wanted = set(nodes)
    if not wanted:
        return {}
    tiles = reader.read_tiles(sorted({tile_key(n) for n in wanted}))
    return {n: _node_from_tile(n, tiles.get(tile_key(n))) for n in wanted}


def _range_hashes(ranges: Sequence[Range], reader: TileReader) -> list[bytes]:
    """Return MTH of every range, reading all the nodes they need at once."""
    parts = [complete_subtrees(start, end) for start, end in ranges]
    nodes = read_nodes((n for part in parts for n in part), reader)
    return [fold_subtrees([nodes[n] for n in part]) for part in parts]


def root_at(size: int, reader: TileReader) -> bytes:
    """Return MTH(D[0:size]), the root hash of the tree of ``size`` leaves."""
    if size < 0:
        raise ValueError(f"tree size must not be negative: {size}")
    return _range_hashes([(0, size)], reader)[0]


def inclusion_proof(index: int, size: int, reader: TileReader) -> list[bytes]:
    """Return the RFC 9162 inclusion proof of leaf ``index`` in the tree of ``size`` leaves."""
    if not 0 <= index < size:
        raise ValueError(f"leaf index {index} is not in a tree of size {size}")
    return _range_hashes(inclusion_path(index, size), reader)


def consistency_proof(old_size: int, new_size: int, reader: TileReader) -> list[bytes]:
    """Return the RFC 9162 consistency proof from tree size ``old_size`` to ``new_size``.

    Equal sizes give the empty proof; a proof from the empty tree to a larger one
    does not exist (it would prove nothing), so ``old_size`` 0 < ``new_size`` is an error.
    """
    if not 0 <= old_size <= new_size:
        raise ValueError(f"sizes must satisfy 0 <= old ({old_size}) <= new ({new_size})")
    if old_size == new_size:
        return []
    if old_size == 0:
        raise ValueError("there is no consistency proof from the empty tree")
    return _range_hashes(consistency_path(old_size, new_size), reader)


# --- appending -------------------------------------------------------------------


class TreeAppender:
    """The growing right edge of the tree, producing the tiles to store.

    State: ``size``; the compact range (hashes of the complete subtrees making up
    ``[0, size)``, largest first); the entries of the rightmost tile of each level;
    and the tiles completed since the last :meth:`take_dirty_tiles`.
    """

    __slots__ = ("_done", "_range", "_size", "_taken_size", "_tile_no", "_tiles")

    def __init__(self) -> None:
        """Start the empty tree; :meth:`load` continues a stored one."""
        self._size = 0
        self._range: list[bytes] = []
        self._tiles: list[list[bytes]] = [[]]
        self._tile_no = [0]
        self._done: dict[TileKey, bytes] = {}
        self._taken_size = 0

    @classmethod
    def empty(cls) -> Self:
        """Return the appender of the empty tree."""
        return cls()

    @classmethod
    def load(cls, size: int, reader: TileReader) -> Self:
        """Rebuild the right edge of the stored tree of ``size`` leaves with one tile read."""
        if size < 0:
            raise ValueError(f"tree size must not be negative: {size}")
        range_nodes = complete_subtrees(0, size)
        partial = _partial_tiles(size)
        tiles = reader.read_tiles(sorted({tile_key(n) for n in range_nodes} | {key for key, w in partial if w}))
        appender = cls()
        appender._size = appender._taken_size = size
        appender._range = [_node_from_tile(n, tiles.get(tile_key(n))) for n in range_nodes]
        appender._tiles = [_tile_entries(key, width, tiles) for key, width in partial]
        appender._tile_no = [index for (_, index), _ in partial]
        return appender

    @property
    def size(self) -> int:
        """Number of leaves appended so far."""
        return self._size

    def root(self) -> bytes:
        """Return the current root hash, MTH(D[0:size])."""
        return fold_subtrees(self._range)

    def append(self, leaf_hash: bytes) -> None:
        """Append one leaf hash."""
        if len(leaf_hash) != HASH_SIZE:
            raise ValueError(f"leaf hash must have {HASH_SIZE} bytes, not {len(leaf_hash)}")
        tile = self._tiles[0]
        tile.append(leaf_hash)
        if len(tile) == TILE_WIDTH:
            self._complete_tile(0)
        self._merge(leaf_hash, 0)

    def extend(self, hashes: Iterable[bytes]) -> None:
        """Append leaf hashes in order; whole aligned tiles take a fast path.

        On a malformed hash, the leaves before its chunk of the tile stay appended:
        roll back with a :meth:`copy` taken before.
        """
        it = iter(hashes)
        while chunk := list(islice(it, TILE_WIDTH - self._size % TILE_WIDTH)):
            if set(map(len, chunk)) != {HASH_SIZE}:
                raise ValueError(f"every leaf hash must have {HASH_SIZE} bytes")
            if len(chunk) == TILE_WIDTH:
                self._append_full_tile(chunk)
            else:
                for leaf in chunk:
                    self.append(leaf)

    def take_dirty_tiles(self) -> dict[TileKey, bytes]:
        """Return the full contents of every tile changed since the last take."""
        dirty, self._done = self._done, {}
        for level, entries in enumerate(self._tiles):
            shift = TILE_HEIGHT * level
            if entries and self._size >> shift > self._taken_size >> shift:
                dirty[(level, self._tile_no[level])] = b"".join(entries)
        self._taken_size = self._size
        return dirty

    def copy(self) -> TreeAppender:
        """Return an independent snapshot (O(log n)), e.g. to roll back a transaction."""
        clone = TreeAppender.__new__(TreeAppender)
        clone._size = self._size
        clone._range = self._range.copy()
        clone._tiles = [entries.copy() for entries in self._tiles]
        clone._tile_no = self._tile_no.copy()
        clone._done = self._done.copy()
        clone._taken_size = self._taken_size
        return clone

    # The compact range holds one hash per set bit of size (largest first). Adding a
    # complete subtree of 2**height leaves merges it with its left neighbours like a
    # binary carry; every merged node whose height is a multiple of 8 enters a tile.
    def _merge(self, node: bytes, height: int) -> None:
        compact_range = self._range
        count = self._size >> height
        added = 1 << height
        while count & 1:
            node = sha256(b"\x01" + compact_range.pop() + node).digest()
            count >>= 1
            height += 1
            if not height % TILE_HEIGHT:
                self._add_to_tile(height // TILE_HEIGHT, node)
        compact_range.append(node)
        self._size += added

    def append_tile_root(self, root: bytes) -> None:
        """Append a whole tile of 256 leaves, at a tile boundary, given only its root.

        The level-0 tile itself is not kept (nor returned by :meth:`take_dirty_tiles`):
        this is for a caller that has it elsewhere, as verification does, which checks
        level 0 in the processes that hash the leaves and sends on only tile roots.
        """
        if self._size % TILE_WIDTH:
            raise ValueError(f"a tile root cannot be appended at size {self._size}, inside a tile")
        if len(root) != HASH_SIZE:
            raise ValueError(f"a tile root must have {HASH_SIZE} bytes, not {len(root)}")
        self._tile_no[0] += 1
        self._add_to_tile(1, root)
        self._merge(root, TILE_HEIGHT)

    def _append_full_tile(self, leaves: list[bytes]) -> None:
        """Append 256 leaves at a tile boundary: hash the tile up level by level."""
        tile = b"".join(leaves)
        self._done[(0, self._tile_no[0])] = tile
        self.append_tile_root(hash_up(tile, TILE_HEIGHT))

    def _add_to_tile(self, level: int, node: bytes) -> None:
        if level == len(self._tiles):
            self._tiles.append([])
            self._tile_no.append(0)
        self._tiles[level].append(node)
        if len(self._tiles[level]) == TILE_WIDTH:
            self._complete_tile(level)

    def _complete_tile(self, level: int) -> None:
        self._done[(level, self._tile_no[level])] = b"".join(self._tiles[level])
        self._tile_no[level] += 1
        self._tiles[level] = []


def _partial_tiles(size: int) -> list[tuple[TileKey, int]]:
    """Return ``((level, index), width)`` of the rightmost tile of every level (width may be 0)."""
    partial = []
    level = 0
    while size >> (TILE_HEIGHT * level) or level == 0:
        count = size >> (TILE_HEIGHT * level)
        partial.append(((level, count >> TILE_HEIGHT), count % TILE_WIDTH))
        level += 1
    return partial


def _tile_entries(key: TileKey, width: int, tiles: Mapping[TileKey, bytes]) -> list[bytes]:
    if width == 0:
        return []
    data = tiles.get(key, b"")[: width * HASH_SIZE]
    if len(data) != width * HASH_SIZE:
        raise StoreError(f"tile {key} is missing or shorter than {width} hashes")
    return [data[i : i + HASH_SIZE] for i in range(0, len(data), HASH_SIZE)]
