"""Streaming evaluation of Sigma correlation rules over event time.

Implements the correlation types of the Sigma correlation rules specification
(v2: ``event_count``, ``value_count``, ``temporal``, ``temporal_ordered``, plus
``value_sum``/``value_avg``) with ``group-by``, ``aliases`` and ``timespan`` as
*sliding* windows on the events' own time:

* a window is the closed interval ``[end - timespan, end]``; two events exactly
  ``timespan`` apart are in one window;
* when an event arrives, every window that contains it (ending at that event or at
  a later event already seen, up to ``timespan`` later) is evaluated, so events
  that arrive late or out of order are counted where they belong;
* an event older than the rule's watermark (latest event time seen minus the
  allowed lateness) is too late: it is counted in :attr:`CorrelationState.late`
  and ignored;
* state is bounded: entries older than ``watermark - timespan`` can never share a
  window with an acceptable event and are evicted, empty groups dropped;
* deduplication: at most one alert per rule, group and *bucket* — the
  epoch-aligned interval of length ``timespan`` holding the end of the firing
  window. The alert key ``<rule id>:<group key>:<bucket start>`` is a pure function
  of the logged events, so replaying the log's tail after a restart recomputes the
  same keys: a caller that skips keys it has already stored neither repeats nor
  misses an alert.

An event whose group-by field is absent does not take part in the correlation
(grouping all "missing" values together would link unrelated actors).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from operator import attrgetter
from typing import Any

from auditfed.detect.fields import MISSING, text_of
from auditfed.detect.rules import CorrelationSpec

__all__ = ["CorrelationFeed", "CorrelationHit", "CorrelationState", "format_time", "parse_time"]

#: Cap on event indexes carried by one alert (the window can be large).
MAX_INDEXES = 1000


def parse_time(value: Any) -> float | None:
    """RFC 3339 timestamp (or epoch seconds) → epoch seconds; ``None`` if unusable."""
    if type(value) is str:
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return moment.timestamp()
    if type(value) in (int, float):
        return float(value)
    return None


def format_time(ts: float) -> str:
    """Epoch seconds → RFC 3339 UTC with microseconds and ``Z``."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(slots=True)
class _Entry:
    """One input match in a window; a group's entries are kept in time order (ties by arrival)."""

    ts: float
    pos: int  # position of the input rule in the correlation
    indexes: tuple[int, ...]
    value: Any


_TS = attrgetter("ts")


@dataclass(slots=True)
class CorrelationHit:
    """A window that satisfied a correlation (the engine turns it into an alert)."""

    key: str
    group: dict[str, Any]
    group_key: str
    indexes: tuple[int, ...]
    first_ts: float
    last_ts: float
    window_start: float
    value: float


def _group_text(value: Any) -> str | None:
    if value is MISSING or value is None:
        return None
    if type(value) is list:
        parts = sorted(t for t in (text_of(v) for v in value) if t is not None)
        return ",".join(parts) if parts else None
    return text_of(value)


_NO_HITS: tuple[CorrelationHit, ...] = ()


class CorrelationFeed:
    """One input rule of a correlation: its matches' group and value, into the windows."""

    __slots__ = ("_group_getters", "_value_getter", "pos", "state")

    def __init__(self, state: CorrelationState, pos: int) -> None:
        self.state = state
        self.pos = pos
        self._group_getters = tuple(state.spec.inputs[pos].group_getters)
        self._value_getter = state.spec.inputs[pos].value_getter

    def group_of(self, source: Any) -> tuple[str, ...] | None:
        """Group-by values of ``source`` (an event, or a child correlation's group).

        ``None`` if one is missing: the match then takes no part in the correlation.
        """
        values = []
        for getter in self._group_getters:
            value = getter(source)
            text = value if type(value) is str else _group_text(value)
            if text is None:
                return None
            values.append(text)
        return tuple(values)

    def add(self, ts: float, indexes: tuple[int, ...], group: tuple[str, ...], source: Any) -> Sequence[CorrelationHit]:
        """Record the match of ``source`` at ``ts``; return the windows that fire."""
        value = None if self._value_getter is None else self._value_getter(source)
        return self.state.add(self.pos, ts, indexes, group, value)


class CorrelationState:
    """Windows and dedup state of one correlation rule."""

    def __init__(self, spec: CorrelationSpec, lateness: float) -> None:
        self.spec = spec
        self.lateness = float(lateness)
        self.span = spec.timespan
        self.groups: dict[tuple[str, ...], list[_Entry]] = {}
        self.emitted: dict[str, float] = {}  # key → bucket start
        self.max_ts = -math.inf
        self.late = 0
        self._last_sweep = -math.inf
        self._n_inputs = len(spec.inputs)
        #: per input rule, how its matches enter this state
        self.feeds = [CorrelationFeed(self, pos) for pos in range(len(spec.inputs))]

    # -- public --------------------------------------------------------------

    @property
    def watermark(self) -> float:
        return self.max_ts - self.lateness

    def add(
        self,
        pos: int,
        ts: float,
        indexes: tuple[int, ...],
        group: tuple[str, ...],
        value: Any = None,
    ) -> Sequence[CorrelationHit]:
        """Record a match of input ``pos`` at time ``ts``; return new firing windows.

        A match older than the watermark is counted in :attr:`late` and ignored.
        """
        if ts < self.max_ts - self.lateness:
            self.late += 1
            return _NO_HITS
        if ts > self.max_ts:
            self.max_ts = ts
            if ts - self._last_sweep >= self.span:
                self.sweep()
        entries = self.groups.get(group)
        if entries is None:
            entries = self.groups[group] = []
        else:
            _evict(entries, self.max_ts - self.lateness - self.span)
        entry = _Entry(ts, pos, indexes, value)
        if not entries or entries[-1].ts <= ts:
            at = len(entries)
            entries.append(entry)
        else:
            at = bisect.bisect_right(entries, ts, key=_TS)
            entries.insert(at, entry)
        return self._evaluate(group, entries, at)

    def sweep(self) -> None:
        """Evict expired entries, empty groups and dedup keys that cannot recur."""
        self._last_sweep = self.max_ts
        horizon = self.watermark - self.span
        for group in list(self.groups):
            entries = self.groups[group]
            _evict(entries, horizon)
            if not entries:
                del self.groups[group]
        oldest_bucket = math.floor(self.watermark / self.span) * self.span
        for key, bucket in list(self.emitted.items()):
            if bucket < oldest_bucket:
                del self.emitted[key]

    def size(self) -> int:
        return sum(len(e) for e in self.groups.values())

    # -- internals -----------------------------------------------------------

    def _evaluate(self, group: tuple[str, ...], entries: list[_Entry], at: int) -> Sequence[CorrelationHit]:
        """Check every window holding ``entries[at]``: those ending at it or up to a span later."""
        span = self.span
        last_end = entries[at].ts + span
        hits: list[CorrelationHit] = []
        fired = math.nan  # the bucket of the last hit (window ends only grow)
        j = at
        n = len(entries)
        while j < n and entries[j].ts <= last_end:
            end = entries[j].ts
            # the window includes every entry with ts == end (ties)
            k = j
            while k + 1 < n and entries[k + 1].ts == end:
                k += 1
            bucket = math.floor(end / span) * span
            if bucket != fired:
                lo = bisect.bisect_left(entries, end - span, key=_TS)
                if lo <= at:
                    hit = self._check(group, entries[lo : k + 1], bucket)
                    if hit is not None:
                        fired = bucket
                        hits.append(hit)
            j = k + 1
        return hits or _NO_HITS

    def _check(self, group: tuple[str, ...], window: list[_Entry], bucket: float) -> CorrelationHit | None:
        spec = self.spec
        kind = spec.type
        chosen = window
        if kind == "event_count":
            measure: float = len(window)
        elif kind == "value_count":
            measure = len({t for t in (_group_text(e.value) for e in window) if t is not None})
        elif kind in ("value_sum", "value_avg"):
            numbers = [n for n in (_number(e.value) for e in window) if n is not None]
            if not numbers:
                return None
            measure = sum(numbers)
            if kind == "value_avg":
                measure /= len(numbers)
        elif kind == "temporal":
            measure = len({e.pos for e in window})
        else:  # temporal_ordered: greedy earliest subsequence 0, 1, ..., n-1
            chosen = []
            want = 0
            for e in window:
                if e.pos == want:
                    chosen.append(e)
                    want += 1
                    if want == self._n_inputs:
                        break
            measure = want
        if not spec.op(measure, spec.threshold):
            return None
        group_key = "|".join(group)
        key = f"{spec.id}:{group_key}:{format_time(bucket)}"
        if key in self.emitted:
            return None
        self.emitted[key] = bucket
        indexes: list[int] = []
        for e in chosen:
            indexes.extend(e.indexes)
        indexes = sorted(set(indexes))[:MAX_INDEXES]
        return CorrelationHit(
            key=key,
            group=dict(zip(spec.group_by, group, strict=True)),
            group_key=group_key,
            indexes=tuple(indexes),
            first_ts=chosen[0].ts,
            last_ts=chosen[-1].ts,
            window_start=window[-1].ts - self.span,
            value=measure,
        )


def _evict(entries: list[_Entry], horizon: float) -> None:
    """Drop the entries older than ``horizon`` (they can share no window with a new match)."""
    if entries and entries[0].ts < horizon:
        del entries[: bisect.bisect_left(entries, horizon, key=_TS)]


def _number(value: Any) -> float | None:
    if type(value) is list:
        value = value[0] if value else None
    if type(value) in (int, float):
        return float(value)
    if type(value) is str:
        try:
            return float(value)
        except ValueError:
            return None
    return None
