"""Retention: removing old entries' bytes while the log stays verifiable.

An audit log is kept for a fixed time (a year, seven years: whatever the policy
says), then its oldest events must go. What goes is the entries' *bytes* and their
query-index rows; their leaf hashes stay in the level-0 tiles and every signed
checkpoint stays. So the tree keeps its shape: every checkpoint, inclusion proof and
consistency proof still verifies, and ``auditfed verify`` checks the removed part of
the tree from the stored leaf hashes against the signed roots (see
:mod:`auditfed.verification`). Evidence bundles exported before removal keep
verifying offline.

Age is arrival time: entries are appended in the order the node received them, so
``observed_time`` grows with the log index (up to the few milliseconds by which
concurrent requests of one group commit may differ), and the cut-off for "older
than" is found by binary search over the log. A producer's ``time`` is not used: it
is a claim, and late or back-filled events would make it unordered.

The store decides the granularity (:meth:`~auditfed.store.base.Store.prune_before`):
SQLite removes exactly the entries below the cut-off, PostgreSQL whole partitions
below it (dropping a partition is instant and leaves no dead rows). The newest entry
always stays.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import orjson

from auditfed.errors import InvalidInput
from auditfed.event import format_time
from auditfed.store.base import Store

MAX_AGE_YEARS = 1000
_AGE = re.compile(r"^\s*(\d+)\s*([smhdwy])\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 7 * 86_400, "y": 365 * 86_400}


@dataclass(frozen=True, slots=True)
class RetentionResult:
    #: Entries below this index were removed before.
    retained_from_before: int
    #: ... and after this run (equal when nothing was old enough).
    retained_from: int
    #: The log's size: entries ``[retained_from, size)`` keep their bytes.
    size: int

    @property
    def removed(self) -> int:
        return self.retained_from - self.retained_from_before

    def as_dict(self) -> dict[str, int]:
        return {"removed": self.removed, "retained_from": self.retained_from, "size": self.size}


def parse_age(text: str) -> timedelta:
    """``400d``, ``52w``, ``7y`` (365 days), ``12h``, ``30m`` (minutes), ``90s`` -> a
    positive duration."""
    match = _AGE.match(text)
    if match is None or int(match[1]) == 0:
        raise InvalidInput(f"not an age: {text!r} (a positive number and y, w, d, h, m or s)")
    seconds = int(match[1]) * _UNIT_SECONDS[match[2]]
    if seconds > MAX_AGE_YEARS * _UNIT_SECONDS["y"]:
        raise InvalidInput(f"not an age: {text!r} is more than {MAX_AGE_YEARS} years")
    return timedelta(seconds=seconds)


def first_index_observed_since(store: Store, cutoff: datetime) -> int:
    """The first index whose entry was observed at or after ``cutoff`` (the size if none)."""
    boundary = format_time(cutoff)
    low, high = store.retained_from(), store.size()
    while low < high:
        middle = (low + high) // 2
        if _observed_time(store, middle) < boundary:
            low = middle + 1
        else:
            high = middle
    return low


def _observed_time(store: Store, index: int) -> str:
    rows = store.entries(index, index + 1)
    if not rows:  # removed meanwhile by a concurrent prune: older than anything kept
        return ""
    return str(orjson.loads(rows[0][1]).get("observed_time", ""))


def apply_retention(
    store: Store,
    *,
    older_than: timedelta | None = None,
    before: int | None = None,
    now: datetime | None = None,
    dry_run: bool = False,
) -> RetentionResult:
    """Remove entries observed more than ``older_than`` ago, or those below ``before``.

    With ``dry_run`` nothing changes: the result says where the cut would fall (for
    SQLite; PostgreSQL may stop at a lower partition boundary).
    """
    if older_than is not None and before is not None:
        raise InvalidInput("give an age (older than) or an index (before), not both")
    if older_than is not None:
        cut = first_index_observed_since(store, (now or datetime.now(UTC)) - older_than)
    elif before is not None and before >= 0:
        cut = before
    else:
        raise InvalidInput("give an age (older than) or a non-negative index (before)")
    current, size = store.retained_from(), store.size()
    if dry_run:
        return RetentionResult(current, max(current, min(cut, size - 1)), size)
    return RetentionResult(current, store.prune_before(cut), size)
