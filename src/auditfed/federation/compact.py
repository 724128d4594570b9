"""A compact range: the right edge of an RFC 9162 Merkle tree, enough to keep appending.

The tree of ``size`` leaves is the concatenation of complete subtrees whose sizes
are the set bits of ``size`` (largest first); their root hashes are all a verifier
needs to append more leaves and compute MTH(D[0:size]) (RFC 9162 §2.1.1). The hub
keeps one per node, at most 64 hashes, and stores it as their concatenation.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Self

from auditfed.ledger.hashing import HASH_SIZE, fold_subtrees, node_hash

__all__ = ["CompactRange"]


class CompactRange:
    """Hashes of the complete subtrees making up leaves ``[0, size)``."""

    __slots__ = ("hashes", "size")

    def __init__(self, size: int = 0, hashes: Iterable[bytes] = ()) -> None:
        self.size = size
        self.hashes = list(hashes)
        if len(self.hashes) != size.bit_count() or any(len(h) != HASH_SIZE for h in self.hashes):
            raise ValueError(f"a compact range of size {size} needs {size.bit_count()} hashes")

    @classmethod
    def decode(cls, size: int, blob: bytes) -> Self:
        """The range of ``size`` leaves stored as concatenated hashes."""
        if len(blob) % HASH_SIZE:
            raise ValueError("a stored compact range must be whole hashes")
        return cls(size, (blob[i : i + HASH_SIZE] for i in range(0, len(blob), HASH_SIZE)))

    def encode(self) -> bytes:
        return b"".join(self.hashes)

    def copy(self) -> CompactRange:
        return CompactRange(self.size, self.hashes)

    def append(self, leaf_hash: bytes) -> None:
        """Append one leaf hash: merge it with its left neighbours like a binary carry."""
        node = leaf_hash
        count = self.size
        while count & 1:
            node = node_hash(self.hashes.pop(), node)
            count >>= 1
        self.hashes.append(node)
        self.size += 1

    def extend(self, leaf_hashes: Iterable[bytes]) -> None:
        for leaf in leaf_hashes:
            self.append(leaf)

    def root(self) -> bytes:
        """MTH(D[0:size]); the empty tree's root is SHA-256 of nothing."""
        return fold_subtrees(self.hashes)
