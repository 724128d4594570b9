"""Merkle tree hashing of RFC 9162 §2.1.1 (identical to RFC 6962 §2.1), with SHA-256.

Leaves and interior nodes are domain-separated by a one-byte prefix, so that a
leaf can never be confused with a node::

    MTH({})    = SHA-256()
    leaf hash  = SHA-256(0x00 || leaf data)
    node hash  = SHA-256(0x01 || left || right)
"""

from __future__ import annotations

from hashlib import sha256

HASH_SIZE = 32
"""Size in bytes of every hash in the log."""

EMPTY_ROOT = sha256(b"").digest()
"""MTH({}): the root hash of the empty tree."""


def leaf_hash(data: bytes) -> bytes:
    """Return the RFC 9162 leaf hash of ``data``: SHA-256(0x00 || data)."""
    return sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """Return the RFC 9162 interior node hash: SHA-256(0x01 || left || right)."""
    return sha256(b"\x01" + left + right).digest()


def hash_up(hashes: bytes, levels: int) -> bytes:
    """Hash runs of ``2**levels`` sibling hashes pairwise up to their roots.

    ``hashes`` is the concatenation of whole runs (one tile's worth, or many); the
    result is the concatenation of their roots. One bytes object, not a list of
    hashes, because this is a whole log's worth of work when verifying it.
    """
    pair = 2 * HASH_SIZE
    if len(hashes) % (HASH_SIZE << levels):
        raise ValueError(f"{len(hashes)} bytes are not whole runs of {1 << levels} hashes")
    for _ in range(levels):
        hashes = b"".join([sha256(b"\x01" + hashes[i : i + pair]).digest() for i in range(0, len(hashes), pair)])
    return hashes


def fold_subtrees(hashes: list[bytes]) -> bytes:
    """Return MTH of consecutive complete subtrees, given left to right, largest first.

    A range of leaves ``[start, end)`` that is itself an RFC 9162 subtree splits into
    complete subtrees of strictly decreasing size; its MTH hashes them right to left.
    """
    if not hashes:
        return EMPTY_ROOT
    root = hashes[-1]
    for left in reversed(hashes[:-1]):
        root = sha256(b"\x01" + left + root).digest()
    return root
