"""Verification of Merkle inclusion and consistency proofs, RFC 9162 §2.1.3.2 and §2.1.4.2.

The functions follow the RFC's algorithms step by step (``fn``, ``sn``, ``r``,
``fr``, ``sr`` are the RFC's names) and raise :class:`~auditfed.errors.ProofError`
with the reason whenever a proof does not verify. Conventions for the edge cases
follow the transparency-dev/merkle test vectors: a consistency proof between equal
sizes is empty and the roots must match (the empty tree's root must be MTH({}));
a consistency proof from the empty tree to a non-empty one is meaningless and fails.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence

from auditfed.errors import ProofError
from auditfed.ledger.hashing import EMPTY_ROOT, HASH_SIZE, node_hash

__all__ = [
    "root_from_consistency",
    "root_from_inclusion",
    "verify_consistency",
    "verify_inclusion",
]


def _check_hashes(proof: Sequence[bytes]) -> None:
    for i, p in enumerate(proof):
        if len(p) != HASH_SIZE:
            raise ProofError(f"proof hash {i} has {len(p)} bytes, want {HASH_SIZE}")


def _check_root(name: str, calculated: bytes, expected: bytes) -> None:
    if not hmac.compare_digest(calculated, expected):
        raise ProofError(f"{name} mismatch: calculated {calculated.hex()}, expected {expected.hex()}")


def _lsb(x: int) -> int:
    return x & 1


def _shift_until_lsb_set_or_zero(fn: int, sn: int) -> tuple[int, int]:
    """Right-shift fn and sn equally until LSB(fn) is set or fn is 0."""
    while fn and not _lsb(fn):
        fn, sn = fn >> 1, sn >> 1
    return fn, sn


def root_from_inclusion(leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes]) -> bytes:
    """Return the root that an inclusion proof for ``leaf_hash`` at ``index`` implies.

    Steps 1-5 of RFC 9162 §2.1.3.2, except the final comparison with the root.
    """
    if not 0 <= index < size:
        raise ProofError(f"leaf index {index} is not in a tree of size {size}")
    if len(leaf_hash) != HASH_SIZE:
        raise ProofError(f"leaf hash has {len(leaf_hash)} bytes, want {HASH_SIZE}")
    _check_hashes(proof)
    fn, sn = index, size - 1
    r = leaf_hash
    for p in proof:
        if sn == 0:
            raise ProofError(f"inclusion proof is too long: {len(proof)} hashes")
        if _lsb(fn) or fn == sn:
            r = node_hash(p, r)
            if not _lsb(fn):
                fn, sn = _shift_until_lsb_set_or_zero(fn, sn)
        else:
            r = node_hash(r, p)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise ProofError(f"inclusion proof is too short: {len(proof)} hashes")
    return r


def verify_inclusion(leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes) -> None:
    """Check that ``leaf_hash`` is leaf ``index`` of the tree of ``size`` leaves and ``root``.

    Raises :class:`ProofError` if it is not (RFC 9162 §2.1.3.2).
    """
    _check_root("root", root_from_inclusion(leaf_hash, index, size, proof), root)


def root_from_consistency(old_size: int, new_size: int, old_root: bytes, proof: Sequence[bytes]) -> bytes:
    """Check ``proof`` against ``old_root`` and return the new root it implies.

    Steps 1-7 of RFC 9162 §2.1.4.2 (``first`` = old_size, ``second`` = new_size),
    except the final comparison with the new root.
    """
    if not 0 <= old_size <= new_size:
        raise ProofError(f"sizes must satisfy 0 <= old ({old_size}) <= new ({new_size})")
    if old_size == new_size:
        return _root_from_equal_sizes(old_size, old_root, proof)
    if old_size == 0:
        raise ProofError("a consistency proof from the empty tree is meaningless")
    if not proof:
        raise ProofError("consistency proof is empty")
    _check_hashes(proof)
    path = list(proof)
    if old_size & (old_size - 1) == 0:
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while _lsb(fn):
        fn, sn = fn >> 1, sn >> 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError(f"consistency proof is too long: {len(proof)} hashes")
        if _lsb(fn) or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not _lsb(fn):
                fn, sn = _shift_until_lsb_set_or_zero(fn, sn)
        else:
            sr = node_hash(sr, c)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise ProofError(f"consistency proof is too short: {len(proof)} hashes")
    _check_root("old root", fr, old_root)
    return sr


def _root_from_equal_sizes(size: int, old_root: bytes, proof: Sequence[bytes]) -> bytes:
    """Equal sizes: the proof is empty and the old root is the new root."""
    if proof:
        raise ProofError(f"sizes are equal ({size}) but the proof has {len(proof)} hashes")
    if size == 0:
        _check_root("empty tree root", EMPTY_ROOT, old_root)
    return old_root


def verify_consistency(old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]) -> None:
    """Check that the tree of ``new_size`` and ``new_root`` extends that of ``old_size``.

    Raises :class:`ProofError` if it does not (RFC 9162 §2.1.4.2).
    """
    _check_root("new root", root_from_consistency(old_size, new_size, old_root, proof), new_root)
