"""Micro-benchmark of TreeAppender: ``.venv/bin/python tests/ledger/bench_append.py [N]``.

Reports microseconds per leaf for 1,000,000 (or N) precomputed leaf hashes, against
the cost of the node hashes alone (about one SHA-256 per leaf is inherent).
"""

from __future__ import annotations

import sys
import time
from hashlib import sha256
from itertools import pairwise

from auditfed.ledger import TreeAppender, leaf_hash


def _per_leaf(seconds: float, n: int) -> str:
    return f"{seconds / n * 1e6:.2f} µs/leaf"


def main(n: int) -> None:
    leaves = [leaf_hash(i.to_bytes(8, "big")) for i in range(n)]
    start = time.perf_counter()
    for left, right in pairwise(leaves):
        sha256(b"\x01" + left + right).digest()
    hashing = time.perf_counter() - start
    print(f"{n} node hashes alone: {_per_leaf(hashing, n)}")

    runs = {
        "append() one by one": lambda a: [a.append(leaf) for leaf in leaves],
        "extend() all at once": lambda a: a.extend(leaves),
        "extend() 100 + take_dirty_tiles() + root()": lambda a: [
            (a.extend(leaves[i : i + 100]), a.take_dirty_tiles(), a.root()) for i in range(0, n, 100)
        ],
    }
    for name, run in runs.items():
        appender = TreeAppender.empty()
        start = time.perf_counter()
        run(appender)
        elapsed = time.perf_counter() - start
        print(f"{name}: {_per_leaf(elapsed, n)} ({_per_leaf(elapsed - hashing, n)} beyond hashing)")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000)
