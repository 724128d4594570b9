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
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from auditfed.detect.fields import MISSING, text_of
from auditfed.detect.rules import CorrelationSpec

__all__ = ["CorrelationHit", "CorrelationState", "format_time", "parse_time"]

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


@dataclass(slots=True, order=True)
class _Entry:
    ts: float
    seq: int
    pos: int = field(compare=False)  # position of the input rule in the correlation
    indexes: tuple[int, ...] = field(compare=False)
    value: Any = field(compare=False)


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
        self._seq = 0
        self._last_sweep = -math.inf
        self._n_inputs = len(spec.inputs)

    # -- public --------------------------------------------------------------

    @property
    def watermark(self) -> float:
        return self.max_ts - self.lateness

    def group_of(self, pos: int, source: Any) -> tuple[str, ...] | None:
        """Group-by values of ``source`` (event or child group dict) for input ``pos``."""
        values = []
        for getter in self.spec.inputs[pos].group_getters:
            text = _group_text(getter(source))
            if text is None:
                return None
            values.append(text)
        return tuple(values)

    def value_of(self, pos: int, source: Any) -> Any:
        getter = self.spec.inputs[pos].value_getter
        return None if getter is None else getter(source)

    def add(
        self,
        pos: int,
        ts: float,
        indexes: tuple[int, ...],
        group: tuple[str, ...],
        value: Any = None,
    ) -> list[CorrelationHit]:
        """Record a match of input ``pos`` at time ``ts``; return new firing windows."""
        if ts < self.max_ts - self.lateness:
            self.late += 1
            return []
        if ts > self.max_ts:
            self.max_ts = ts
            if ts - self._last_sweep >= self.span:
                self.sweep()
        entries = self.groups.get(group)
        if entries is None:
            entries = self.groups[group] = []
        self._seq += 1
        entry = _Entry(ts, self._seq, pos, indexes, value)
        if not entries or entries[-1] < entry:
            entries.append(entry)
        else:
            bisect.insort(entries, entry)
        self._evict(entries)
        return self._evaluate(group, entries, entry)

    def sweep(self) -> None:
        """Evict expired entries, empty groups and dedup keys that cannot recur."""
        self._last_sweep = self.max_ts
        for group in list(self.groups):
            entries = self.groups[group]
            self._evict(entries)
            if not entries:
                del self.groups[group]
        oldest_bucket = math.floor(self.watermark / self.span) * self.span
        for key, bucket in list(self.emitted.items()):
            if bucket < oldest_bucket:
                del self.emitted[key]

    def size(self) -> int:
        return sum(len(e) for e in self.groups.values())

    # -- internals -----------------------------------------------------------

    def _evict(self, entries: list[_Entry]) -> None:
        horizon = self.watermark - self.span
        if entries and entries[0].ts < horizon:
            cut = 0
            while cut < len(entries) and entries[cut].ts < horizon:
                cut += 1
            del entries[:cut]

    def _evaluate(self, group: tuple[str, ...], entries: list[_Entry], new: _Entry) -> list[CorrelationHit]:
        span = self.span
        hits: list[CorrelationHit] = []
        seen_buckets: set[float] = set()
        start_i = bisect.bisect_left(entries, new)
        # candidate window ends: the new entry and later entries within one span of it
        j = start_i
        n = len(entries)
        while j < n and entries[j].ts <= new.ts + span:
            end = entries[j].ts
            # the window includes every entry with ts == end (ties)
            k = j
            while k + 1 < n and entries[k + 1].ts == end:
                k += 1
            bucket = math.floor(end / span) * span
            if bucket not in seen_buckets:
                lo = bisect.bisect_left(entries, end - span, key=_ts)
                window = entries[lo : k + 1]
                if lo <= start_i <= k:
                    hit = self._check(group, window, bucket)
                    if hit is not None:
                        seen_buckets.add(bucket)
                        hits.append(hit)
            j = k + 1
        return hits

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


def _ts(entry: _Entry) -> float:
    return entry.ts


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
