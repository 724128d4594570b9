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

The auditors' trail is kept: a cut that would remove a meta-audit record (an event
of ``source.service`` ``auditfed``: auditor reads, administrative acts, retention runs,
alerts) observed less than the retention floor ago (``retention_floor``, default 400
days) is refused as a whole, naming the oldest such record and the highest cut that
keeps it. Refusing, rather than quietly cutting lower, makes an attempt to erase the
trail fail loudly (and it is logged, by the server and by the CLI).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from auditfed.errors import Forbidden, InvalidInput
from auditfed.event import format_time
from auditfed.store.base import Store
from auditfed.store.filters import Query, Term

MAX_AGE_YEARS = 1000
#: ``source.service`` of the records the log makes of itself (the auditors' trail).
META_SERVICE = "auditfed"
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


def age_text(age: timedelta) -> str:
    """``400d`` or ``90s``: an age as the settings write it."""
    seconds = int(age.total_seconds())
    return f"{seconds // 86_400}d" if seconds % 86_400 == 0 else f"{seconds}s"


def parse_floor(text: str) -> timedelta | None:
    """The ``retention_floor`` setting: an age, or ``0`` for none."""
    return None if text.strip() == "0" else parse_age(text)


def apply_retention(
    store: Store,
    *,
    older_than: timedelta | None = None,
    before: int | None = None,
    now: datetime | None = None,
    dry_run: bool = False,
    floor: timedelta | None = None,
) -> RetentionResult:
    """Remove entries observed more than ``older_than`` ago, or those below ``before``.

    With ``dry_run`` nothing changes: the result says where the cut would fall (for
    SQLite; PostgreSQL may stop at a lower partition boundary). With ``floor``, a cut
    that would remove a meta-audit record observed less than ``floor`` ago raises
    :class:`~auditfed.errors.Forbidden` (dry run or not) and removes nothing.
    """
    if older_than is not None and before is not None:
        raise InvalidInput("give an age (older than) or an index (before), not both")
    now = now or datetime.now(UTC)
    if older_than is not None:
        cut = first_index_observed_since(store, now - older_than)
    elif before is not None and before >= 0:
        cut = before
    else:
        raise InvalidInput("give an age (older than) or a non-negative index (before)")
    current, size = store.retained_from(), store.size()
    cut = max(current, min(cut, size - 1))
    if floor is not None:
        _refuse_cutting_into_the_trail(store, current, cut, now - floor, floor)
    if dry_run:
        return RetentionResult(current, cut, size)
    return RetentionResult(current, store.prune_before(cut), size)


def _refuse_cutting_into_the_trail(
    store: Store, start: int, cut: int, since: datetime, floor: timedelta
) -> None:
    protected = first_protected_record(store, start, cut, since)
    if protected is None:
        return
    index, event = protected
    observed = event.get("observed_time", "")
    raise Forbidden(
        f"retention refused: the cut below index {cut} would remove meta-audit record {index} "
        f"({event.get('action')}, observed {observed}), younger than the retention floor of "
        f"{age_text(floor)} that keeps the auditors' trail. Cut at most below index {index} "
        f"(--before {index}), i.e. only entries observed before {observed}",
        protected_index=index, protected_action=event.get("action"), protected_observed=observed,
        max_before=index, floor_seconds=int(floor.total_seconds()),
    )


def first_protected_record(
    store: Store, start: int, cut: int, since: datetime
) -> tuple[int, dict[str, Any]] | None:
    """The first meta-audit record in ``[start, cut)`` observed at or after ``since``.

    The query index finds it among indexed entries; the few the index has not reached
    yet (it trails the log briefly, or longer after a crash) are read directly.
    """
    low = max(start, first_index_observed_since(store, since))
    if low >= cut:
        return None
    indexed = store.indexed_size()
    query = Query(Term("service", META_SERVICE), newest_first=False, limit=1, after=low - 1)
    for index, data in store.search(query):
        if index < cut:
            return index, orjson.loads(data)
    for index, data in store.entries(max(low, indexed), cut):
        event = orjson.loads(data)
        if event.get("source", {}).get("service") == META_SERVICE:
            return index, event
    return None
