"""Tiles, proofs from tiles and TreeAppender, against the recursive RFC 9162 oracle."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from auditfed.errors import ProofError, StoreError
from auditfed.ledger import (
    EMPTY_ROOT,
    TreeAppender,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    root_at,
    verify_consistency,
    verify_inclusion,
)

from .reference import RFC6962_LEAVES, RFC6962_ROOTS, MemoryTiles, ReferenceTree, make_leaves

BIG = 65536 + 3 * 256 + 37  # crosses the level-2 boundary (65536 = 256 * 256 leaves)
BOUNDARIES = [1, 2, 3, 255, 256, 257, 511, 512, 513, 768, 4096, 65535, 65536, 65537, 65792, BIG]
SETTINGS = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def build(leaves: list[bytes], take_every: int = 0) -> tuple[TreeAppender, MemoryTiles]:
    """Append ``leaves``, writing dirty tiles to a store every ``take_every`` leaves."""
    appender, store = TreeAppender.empty(), MemoryTiles()
    step = take_every or len(leaves) or 1
    for i in range(0, len(leaves), step):
        appender.extend(leaves[i : i + step])
        store.update(appender.take_dirty_tiles())
    return appender, store


@pytest.fixture(scope="module")
def big():
    leaves = make_leaves(BIG)
    appender, store = build(leaves, take_every=10_007)
    return ReferenceTree(leaves), appender, store


sizes = st.one_of(st.integers(1, 3000), st.sampled_from(BOUNDARIES), st.integers(1, BIG))


# --- the RFC 6962 reference tree ---------------------------------------------


def test_rfc6962_reference_tree():
    leaves = [leaf_hash(d) for d in RFC6962_LEAVES]
    appender, store = TreeAppender.empty(), MemoryTiles()
    assert appender.root() == RFC6962_ROOTS[0] == EMPTY_ROOT
    for size, leaf in enumerate(leaves, start=1):
        appender.append(leaf)
        store.update(appender.take_dirty_tiles())
        assert appender.size == size
        assert appender.root() == RFC6962_ROOTS[size]
    for size in range(9):
        assert root_at(size, store) == RFC6962_ROOTS[size]
        for index in range(size):
            proof = inclusion_proof(index, size, store)
            verify_inclusion(leaves[index], index, size, proof, RFC6962_ROOTS[size])
        for old in range(1, size + 1):
            proof = consistency_proof(old, size, store)
            verify_consistency(old, size, RFC6962_ROOTS[old], RFC6962_ROOTS[size], proof)
    assert store == {(0, 0): b"".join(leaves)}


def test_known_proofs_from_tiles():
    leaves = [leaf_hash(d) for d in RFC6962_LEAVES]
    _, store = build(leaves)
    assert [p.hex()[:8] for p in inclusion_proof(5, 8, store)] == ["bc1a0643", "ca854ea1", "d37ee418"]
    assert [p.hex()[:8] for p in consistency_proof(6, 8, store)] == [
        "0ebc5d34",
        "ca854ea1",
        "d37ee418",
    ]


# --- proofs from tiles -------------------------------------------------------


@SETTINGS
@given(data=st.data(), size=sizes)
def test_inclusion_proofs_from_tiles(big, data, size):
    ref, _, store = big
    index = data.draw(st.integers(0, size - 1), label="index")
    root = ref.root(size)
    assert root_at(size, store) == root
    proof = inclusion_proof(index, size, store)
    assert proof == ref.inclusion(index, size)
    verify_inclusion(ref.leaves[index], index, size, proof, root)

    position = data.draw(st.integers(0, 32 * len(proof) - 1), label="byte") if proof else None
    if position is not None:
        tampered = [bytearray(p) for p in proof]
        tampered[position // 32][position % 32] ^= data.draw(st.integers(1, 255), label="xor")
        with pytest.raises(ProofError):
            verify_inclusion(ref.leaves[index], index, size, [bytes(p) for p in tampered], root)
    other = data.draw(st.integers(0, size), label="other index")
    if other != index:
        with pytest.raises(ProofError):
            verify_inclusion(ref.leaves[index], other, size, proof, root)
    # A proof binds the size through the root: it does not verify for another tree.
    other_size = data.draw(st.integers(index + 1, BIG), label="other size")
    if other_size != size:
        with pytest.raises(ProofError):
            verify_inclusion(ref.leaves[index], index, other_size, proof, ref.root(other_size))


@SETTINGS
@given(data=st.data(), new=sizes)
def test_consistency_proofs_from_tiles(big, data, new):
    ref, _, store = big
    old = data.draw(st.one_of(st.integers(1, new), st.sampled_from([1, new])), label="old")
    old_root, new_root = ref.root(old), ref.root(new)
    proof = consistency_proof(old, new, store)
    assert proof == ref.consistency(old, new)
    verify_consistency(old, new, old_root, new_root, proof)

    if proof:
        position = data.draw(st.integers(0, 32 * len(proof) - 1), label="byte")
        tampered = [bytearray(p) for p in proof]
        tampered[position // 32][position % 32] ^= data.draw(st.integers(1, 255), label="xor")
        with pytest.raises(ProofError):
            verify_consistency(old, new, old_root, new_root, [bytes(p) for p in tampered])
    wrong_old = data.draw(st.integers(1, new), label="wrong old")
    if wrong_old != old:
        with pytest.raises(ProofError):
            verify_consistency(wrong_old, new, ref.root(wrong_old), new_root, proof)
    wrong_new = data.draw(st.integers(old, BIG), label="wrong new")
    if wrong_new != new:
        with pytest.raises(ProofError):
            verify_consistency(old, wrong_new, old_root, ref.root(wrong_new), proof)


def test_proofs_read_few_tiles_in_one_call(big):
    _, _, store = big
    for index in (0, 255, 256, 40_000, 65_535, 65_536, BIG - 2):
        store.reads.clear()
        inclusion_proof(index, BIG, store)
        consistency_proof(index + 1, BIG, store)
        root_at(index + 1, store)
        assert len(store.reads) == 3
        assert all(len(keys) <= 8 for keys in store.reads), store.reads


def test_reading_arguments_are_checked(big):
    _, _, store = big
    for bad in [(-1, 5), (5, 5), (0, 0)]:
        with pytest.raises(ValueError):
            inclusion_proof(*bad, store)
    for bad in [(-1, 5), (6, 5), (0, 5)]:
        with pytest.raises(ValueError):
            consistency_proof(*bad, store)
    with pytest.raises(ValueError):
        root_at(-1, store)
    assert consistency_proof(7, 7, store) == []
    assert consistency_proof(0, 0, store) == []
    assert root_at(0, MemoryTiles()) == EMPTY_ROOT


def test_missing_or_short_tiles_raise_store_error():
    _, store = build(make_leaves(300))
    with pytest.raises(StoreError):
        root_at(301, store)
    del store[(0, 1)]
    with pytest.raises(StoreError):
        inclusion_proof(0, 300, store)
    with pytest.raises(StoreError):
        TreeAppender.load(300, store)


# --- TreeAppender ------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(size=st.one_of(st.integers(0, 2000), st.sampled_from(BOUNDARIES[:-6])), data=st.data())
def test_appender_writes_exactly_the_tiles_of_the_tree(size, data):
    leaves = make_leaves(size)
    ref = ReferenceTree(leaves)
    take_every = data.draw(st.integers(1, 700), label="take every")
    appender, store = build(leaves, take_every)
    assert appender.size == size
    assert appender.root() == ref.root(size)
    assert dict(store) == ref.all_tiles(size)


@settings(max_examples=100, deadline=None)
@given(
    size=st.one_of(st.integers(0, 2500), st.sampled_from(BOUNDARIES[:-6])),
    data=st.data(),
)
def test_load_then_continue_equals_straight_through(size, data):
    leaves = make_leaves(size)
    straight, straight_store = build(leaves)
    cut = data.draw(st.integers(0, size), label="cut")
    first, store = build(leaves[:cut], take_every=data.draw(st.integers(1, 600), label="take"))
    store.reads.clear()
    loaded = TreeAppender.load(cut, store)
    assert len(store.reads) <= 1
    assert loaded.size == cut
    assert loaded.root() == first.root()
    step = data.draw(st.integers(1, 500), label="step")
    for i in range(cut, size, step):
        for leaf in leaves[i : i + step]:
            loaded.append(leaf)
        store.update(loaded.take_dirty_tiles())
    assert loaded.root() == straight.root()
    assert store == straight_store


def test_roots_after_every_append_match_reference():
    leaves = make_leaves(600)
    ref = ReferenceTree(leaves)
    appender = TreeAppender.empty()
    for size, leaf in enumerate(leaves, start=1):
        appender.append(leaf)
        assert appender.root() == ref.root(size)


@settings(max_examples=30, deadline=None)
@given(chunks=st.lists(st.integers(0, 700), max_size=8))
def test_append_and_extend_agree(chunks):
    leaves = make_leaves(sum(chunks))
    one_by_one, extended = TreeAppender.empty(), TreeAppender.empty()
    tiles_a, tiles_b = {}, {}
    start = 0
    for n in chunks:
        for leaf in leaves[start : start + n]:
            one_by_one.append(leaf)
        extended.extend(iter(leaves[start : start + n]))
        start += n
        tiles_a.update(one_by_one.take_dirty_tiles())
        tiles_b.update(extended.take_dirty_tiles())
        assert one_by_one.root() == extended.root()
    assert tiles_a == tiles_b


def test_take_dirty_tiles_returns_only_changes():
    appender = TreeAppender.empty()
    assert appender.take_dirty_tiles() == {}
    appender.extend(make_leaves(300))
    assert set(appender.take_dirty_tiles()) == {(0, 0), (0, 1), (1, 0)}
    assert appender.take_dirty_tiles() == {}
    appender.append(leaf_hash(b"x"))
    dirty = appender.take_dirty_tiles()
    assert set(dirty) == {(0, 1)}
    assert len(dirty[(0, 1)]) == 45 * 32


def test_copy_is_an_independent_snapshot():
    leaves = make_leaves(1000)
    appender = TreeAppender.empty()
    appender.extend(leaves[:500])
    snapshot = appender.copy()
    appender.extend(make_leaves(300, salt=b"rolled back"))
    appender.take_dirty_tiles()
    # Roll back: continue from the snapshot as if the failed batch never happened.
    snapshot.extend(leaves[500:])
    straight, store = build(leaves)
    assert snapshot.root() == straight.root()
    assert snapshot.take_dirty_tiles() == dict(store)


def test_leaf_hashes_must_have_32_bytes():
    appender = TreeAppender.empty()
    with pytest.raises(ValueError):
        appender.append(b"short")
    with pytest.raises(ValueError):
        appender.extend([b"\0" * 32, b"\0" * 33])
    with pytest.raises(ValueError):
        TreeAppender.load(-1, MemoryTiles())


def test_load_of_empty_tree_reads_nothing():
    store = MemoryTiles()
    appender = TreeAppender.load(0, store)
    assert appender.root() == EMPTY_ROOT
    appender.append(leaf_hash(b""))
    assert appender.root() == RFC6962_ROOTS[1]


def test_load_accepts_wider_partial_tiles():
    leaves = make_leaves(1000)
    _, store = build(leaves)  # tiles at size 1000 are wider than those at 700
    loaded = TreeAppender.load(700, store)
    loaded.extend(leaves[700:])
    straight, straight_store = build(leaves)
    assert loaded.root() == straight.root()
    assert {**store, **loaded.take_dirty_tiles()} == straight_store
