"""Test oracles: RFC 9162 §2.1 written out recursively, and an in-memory tile store.

Deliberately independent of :mod:`auditfed.ledger.tree` and ``tiles``: MTH, PATH and
PROOF here are the RFC's recursive definitions, memoised.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import cache
from hashlib import sha256

from auditfed.ledger import leaf_hash, node_hash

# RFC 6962 / certificate-transparency reference tree: leaf data and MTH(D[0:n]), n = 0..8.
RFC6962_LEAVES = [
    bytes.fromhex(h)
    for h in (
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    )
]
RFC6962_ROOTS = [
    bytes.fromhex(h)
    for h in (
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    )
]


def make_leaves(n: int, salt: bytes = b"") -> list[bytes]:
    return [leaf_hash(salt + i.to_bytes(8, "big")) for i in range(n)]


def _k(n: int) -> int:
    """Largest power of two smaller than n (n > 1)."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


class ReferenceTree:
    """MTH, PATH and PROOF of RFC 9162 §2.1 over a fixed list of leaf hashes."""

    def __init__(self, leaves: Sequence[bytes]) -> None:
        self.leaves = list(leaves)
        self.mth = cache(self._mth)

    def _mth(self, start: int, end: int) -> bytes:
        n = end - start
        if n == 0:
            return sha256(b"").digest()
        if n == 1:
            return self.leaves[start]
        k = _k(n)
        return node_hash(self.mth(start, start + k), self.mth(start + k, end))

    def root(self, size: int) -> bytes:
        return self.mth(0, size)

    def path(self, m: int, start: int, end: int) -> list[bytes]:
        n = end - start
        if n == 1:
            return []
        k = _k(n)
        if m < k:
            return [*self.path(m, start, start + k), self.mth(start + k, end)]
        return [*self.path(m - k, start + k, end), self.mth(start, start + k)]

    def inclusion(self, index: int, size: int) -> list[bytes]:
        return self.path(index, 0, size)

    def subproof(self, m: int, start: int, end: int, b: bool) -> list[bytes]:
        n = end - start
        if m == n:
            return [] if b else [self.mth(start, end)]
        k = _k(n)
        if m <= k:
            return [*self.subproof(m, start, start + k, b), self.mth(start + k, end)]
        return [*self.subproof(m - k, start + k, end, False), self.mth(start, start + k)]

    def consistency(self, old: int, new: int) -> list[bytes]:
        return self.subproof(old, 0, new, True)

    def tile(self, level: int, index: int, size: int) -> bytes:
        """The C2SP tlog-tiles tile (level, index) of the tree of ``size`` leaves."""
        height = 8 * level
        count = size >> height
        nodes = range(index * 256, min(count, index * 256 + 256))
        return b"".join(self.mth(k << height, (k + 1) << height) for k in nodes)

    def all_tiles(self, size: int) -> dict[tuple[int, int], bytes]:
        tiles = {}
        level = 0
        while size >> (8 * level):
            count = size >> (8 * level)
            for index in range((count + 255) // 256):
                tiles[(level, index)] = self.tile(level, index, size)
            level += 1
        return tiles


class MemoryTiles(dict):
    """A dict of tiles with the TileReader interface, recording every read."""

    def __init__(self, tiles: Mapping[tuple[int, int], bytes] | None = None) -> None:
        super().__init__(tiles or {})
        self.reads: list[list[tuple[int, int]]] = []

    def read_tiles(self, keys: Sequence[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
        self.reads.append(list(keys))
        return {key: self[key] for key in keys if key in self}
