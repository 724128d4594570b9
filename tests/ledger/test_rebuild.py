"""TreeRebuilder: recomputing stored tiles names the first tampered leaf."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from auditfed.ledger import TreeRebuilder
from auditfed.ledger.hashing import hash_up
from auditfed.ledger.rebuild import compare_tile

from .reference import MemoryTiles, make_leaves
from .test_tiles import build

SIZE = 70_000


@pytest.fixture(scope="module")
def log():
    leaves = make_leaves(SIZE)
    appender, store = build(leaves, take_every=4_999)
    return leaves, appender.root(), dict(store)


def first_fault(leaves: list[bytes], store: MemoryTiles, batch: int = 4096):
    rebuilder = TreeRebuilder()
    for start in range(0, len(leaves), batch):
        rebuilder.feed(leaves[start : start + batch])
        if (mismatch := rebuilder.check(store)) is not None:
            return mismatch
    return rebuilder.root()


def flip(tile: bytes, entry: int) -> bytes:
    data = bytearray(tile)
    data[entry * 32] ^= 1
    return bytes(data)


def test_an_intact_log_rebuilds_to_its_root(log):
    leaves, root, tiles = log
    assert first_fault(leaves, MemoryTiles(tiles)) == root


@settings(max_examples=25, deadline=None)
@given(index=st.integers(0, SIZE - 1))
def test_tampered_stored_leaf_hash_is_pinpointed(log, index):
    leaves, _, tiles = log
    store = MemoryTiles(tiles)
    key = (0, index // 256)
    store[key] = flip(store[key], index % 256)
    mismatch = first_fault(leaves, store)
    assert mismatch.leaf_index == index
    assert mismatch.key == key
    assert "leaf hash differs" in mismatch.detail


@settings(max_examples=25, deadline=None)
@given(index=st.integers(0, SIZE - 1), batch=st.sampled_from([1000, 4096, 20_000]))
def test_tampered_event_data_is_pinpointed(log, index, batch):
    leaves, _, tiles = log
    altered = list(leaves)
    altered[index] = make_leaves(1, salt=b"forged")[0]
    mismatch = first_fault(altered, MemoryTiles(tiles), batch)
    assert (mismatch.level, mismatch.leaf_index) == (0, index)


@pytest.mark.parametrize(("level", "node"), [(1, 0), (1, 17), (1, 272), (2, 0)])
def test_tampered_interior_node_names_its_first_leaf(log, level, node):
    leaves, _, tiles = log
    store = MemoryTiles(tiles)
    key = (level, node // 256)
    store[key] = flip(store[key], node % 256)
    mismatch = first_fault(leaves, store)
    assert mismatch.key == key
    assert mismatch.node_index == node
    assert mismatch.leaf_index == node << (8 * level)


def test_missing_and_truncated_tiles_are_faults(log):
    leaves, _, tiles = log
    store = MemoryTiles(tiles)
    del store[(0, 3)]
    assert first_fault(leaves, store).leaf_index == 3 * 256
    store = MemoryTiles(tiles)
    last = (0, (SIZE - 1) // 256)
    store[last] = store[last][:-32]
    mismatch = first_fault(leaves, store)
    assert mismatch.leaf_index == SIZE - 1
    assert "missing" in mismatch.detail


def test_compare_tile_accepts_wider_stored_tile():
    assert compare_tile((0, 0), b"a" * 64, b"a" * 96) is None
    assert compare_tile((0, 0), b"a" * 64, None).leaf_index == 0
    assert compare_tile((1, 2), b"a" * 64, b"a" * 32 + b"b" * 32).leaf_index == (513 << 8)


def test_tile_roots_rebuild_the_tree_above_level_0(log):
    """Whole tiles fed by their roots (their level-0 tiles checked elsewhere) give the
    same tree and the same tiles above level 0."""
    leaves, root, tiles = log
    whole = SIZE // 256 * 256
    rebuilder = TreeRebuilder()
    for start in range(0, whole, 256):
        rebuilder.feed_tile_root(hash_up(b"".join(leaves[start : start + 256]), 8))
    rebuilder.feed(leaves[whole:])
    assert rebuilder.root() == root
    expected = rebuilder.expected_tiles()
    assert {key for key in expected if key[0] == 0} == {(0, SIZE // 256)}
    assert all(tiles[key].startswith(tile) for key, tile in expected.items())
    with pytest.raises(ValueError, match="inside a tile"):
        rebuilder.feed_tile_root(root)
