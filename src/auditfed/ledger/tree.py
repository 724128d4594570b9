"""The shape of an RFC 9162 Merkle tree: subtrees, proof paths, complete nodes.

Pure integer arithmetic, no hashing and no storage. A *range* ``(start, end)`` is
the subtree over leaves ``D[start:end]``; a *node* ``(height, index)`` is the
complete (perfect) subtree over leaves ``[index * 2**height, (index + 1) * 2**height)``.

- :func:`inclusion_path` lists the ranges whose hashes form ``PATH(m, D[n])``
  (RFC 9162 §2.1.3.1),
- :func:`consistency_path` lists those of ``PROOF(m, D[n])`` (RFC 9162 §2.1.4.1),
- :func:`complete_subtrees` breaks such a range into the complete nodes a
  store keeps, so that ``MTH(range)`` is their right-to-left fold.
"""

from __future__ import annotations

Range = tuple[int, int]
Node = tuple[int, int]


def split_point(n: int) -> int:
    """Return k, the largest power of two smaller than ``n`` (n >= 2), per RFC 9162 §2.1.1."""
    return 1 << ((n - 1).bit_length() - 1)


def complete_subtrees(start: int, end: int) -> list[Node]:
    """Return the complete nodes covering ``[start, end)``, left to right, largest first.

    ``[start, end)`` must be a subtree of some RFC 9162 tree (``start`` a multiple of
    a power of two at least ``end - start``), as every range of a proof path is.
    """
    nodes: list[Node] = []
    while start < end:
        height = (end - start).bit_length() - 1
        nodes.append((height, start >> height))
        start += 1 << height
    return nodes


def inclusion_path(index: int, size: int) -> list[Range]:
    """Return the ranges of ``PATH(index, D[size])``, bottom-up, as RFC 9162 §2.1.3.1."""
    path: list[Range] = []
    start, end = 0, size
    while end - start > 1:
        mid = start + split_point(end - start)
        if index < mid:
            path.append((mid, end))
            end = mid
        else:
            path.append((start, mid))
            start = mid
    path.reverse()
    return path


def consistency_path(old_size: int, new_size: int) -> list[Range]:
    """Return the ranges of ``PROOF(old_size, D[new_size])`` as RFC 9162 §2.1.4.1.

    Requires ``0 < old_size <= new_size``.
    """
    path: list[Range] = []
    start, end = 0, new_size
    whole_old_tree = True  # SUBPROOF's flag b: D[start:end] still starts with D[0:m].
    while end > old_size:
        mid = start + split_point(end - start)
        if old_size <= mid:
            path.append((mid, end))
            end = mid
        else:
            path.append((start, mid))
            start = mid
            whole_old_tree = False
    if not whole_old_tree:
        path.append((start, end))
    path.reverse()
    return path
