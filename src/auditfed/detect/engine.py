"""The streaming detection engine: Sigma rules on every committed event, in log order.

:class:`DetectionEngine` evaluates compiled Sigma detection rules (SigmaHQ
specification) and Sigma correlation rules (correlation rules specification v2)
on each stored event as the log commits it, and returns :class:`Alert` objects.

Speed comes from indexing: rules are grouped by the source kinds their logsource
applies to, and inside a kind by a field whose value they require (for CloudTrail
mostly ``eventName``): one dict lookup picks the few rules an event can match.

Restart: :meth:`DetectionEngine.replay` feeds the log's tail through the engine to
rebuild correlation windows; alerts whose deterministic key the caller has already
stored are suppressed, so a restart in the middle of a window neither repeats nor
misses an alert. :attr:`DetectionEngine.replay_seconds` says how much event time of
tail is needed.
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from auditfed.detect.correlation import CorrelationHit, CorrelationState, format_time, parse_time
from auditfed.detect.fields import Getter, compile_path, text_of
from auditfed.detect.logsources import ALL_KINDS, LogsourceMap, LogsourceTarget
from auditfed.detect.rules import CorrelationSpec, DetectionRule, RuleSet, load_rules

__all__ = ["Alert", "DetectionEngine"]


@dataclass(slots=True)
class Alert:
    """One alert: a detection rule matched an event, or a correlation window fired."""

    rule_id: str
    title: str
    level: str | None
    tags: tuple[str, ...]
    #: "detection" or the correlation type (event_count, temporal_ordered, ...)
    type: str
    #: deterministic dedup key: ``<rule id>:<index>`` or ``<rule id>:<group>:<bucket>``
    key: str
    indexes: tuple[int, ...]
    first_time: str | None
    last_time: str | None
    group: dict[str, Any] = field(default_factory=dict)
    group_key: str = ""
    #: the measured count/sum/average for correlations
    value: float | None = None
    first_ts: float | None = field(default=None, repr=False)
    last_ts: float | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule_id": self.rule_id,
            "title": self.title,
            "level": self.level,
            "tags": list(self.tags),
            "type": self.type,
            "key": self.key,
            "indexes": list(self.indexes),
            "first_time": self.first_time,
            "last_time": self.last_time,
            "group": dict(self.group),
            "group_key": self.group_key,
            "value": self.value,
        }


@dataclass(slots=True)
class _Feed:
    state: CorrelationState
    pos: int
    is_correlation: bool


@dataclass(slots=True)
class _Compiled:
    rule: DetectionRule
    feeds: list[_Feed]
    output: bool


class _Plan:
    """Candidate rules for one source kind: always-tested rules plus value indexes."""

    __slots__ = ("always", "indexes")

    def __init__(self, rules: list[_Compiled]) -> None:
        remaining = list(rules)
        self.indexes: list[tuple[Getter, dict[str, list[_Compiled]]]] = []
        while True:
            counts: dict[str, int] = {}
            for c in remaining:
                for path in c.rule.req or ():
                    counts[path] = counts.get(path, 0) + 1
            if not counts:
                break
            best = max(sorted(counts), key=lambda p: counts[p])
            table: dict[str, list[_Compiled]] = {}
            getter = compile_path(best)
            rest = []
            for c in remaining:
                req = c.rule.req
                if req and best in req:
                    for value in req[best]:
                        table.setdefault(value, []).append(c)
                else:
                    rest.append(c)
            self.indexes.append((getter, table))
            remaining = rest
        self.always = remaining

    def candidates(self, event: dict[str, Any]) -> list[_Compiled]:
        found = list(self.always)
        for getter, table in self.indexes:
            value = getter(event)
            if type(value) is str:
                hit = table.get(value.lower())
                if hit:
                    found.extend(hit)
            elif type(value) is list:
                seen: set[int] = set()
                for element in value:
                    text = text_of(element)
                    for c in table.get(text.lower(), ()) if text is not None else ():
                        if id(c) not in seen:
                            seen.add(id(c))
                            found.append(c)
            else:
                text = text_of(value)
                if text is not None:
                    found.extend(table.get(text.lower(), ()))
        return found


class DetectionEngine:
    """Evaluate Sigma detection and correlation rules on events in log order.

    ``rules`` is a :class:`~auditfed.detect.rules.RuleSet` or paths of rule files and
    folders. ``field_mappings`` maps ``"<product>[/<service>]"`` to ``{sigma field:
    absolute event path}``; ``logsources`` adds or overrides logsource targets.
    ``allowed_lateness`` (seconds) is how far behind the newest event time a
    correlated event may be and still count. ``strict`` raises on the first refused
    rule instead of skipping it (the refusals stay in :attr:`errors`).
    """

    def __init__(
        self,
        rules: RuleSet | Iterable[str | Path],
        *,
        field_mappings: Mapping[str, Mapping[str, str]] | None = None,
        logsources: Mapping[tuple[str, str | None], LogsourceTarget] | None = None,
        allowed_lateness: float = 60.0,
        strict: bool = False,
    ) -> None:
        if isinstance(rules, RuleSet):
            ruleset = rules
        else:
            ruleset = load_rules(rules, logsources=LogsourceMap(logsources, field_mappings))
        if strict and ruleset.errors:
            raise ruleset.errors[0]
        self.ruleset = ruleset
        self.errors = list(ruleset.errors)
        self.allowed_lateness = float(allowed_lateness)
        self.states: dict[str, CorrelationState] = {
            spec.id: CorrelationState(spec, allowed_lateness) for spec in ruleset.correlations
        }
        # who feeds whom
        feeds: dict[str, list[_Feed]] = {}
        for spec in ruleset.correlations:
            for pos, inp in enumerate(spec.inputs):
                feeds.setdefault(inp.rule_id, []).append(_Feed(self.states[spec.id], pos, inp.is_correlation))
        self._feeds = feeds
        self._compiled = [_Compiled(rule, feeds.get(rule.id, []), rule.meta.output) for rule in ruleset.detections]
        self._plans: dict[str | None, _Plan] = {}
        self._kinds = {k for c in self._compiled for k in c.rule.kinds} - {ALL_KINDS}
        self._correlation_output = {spec.id: spec.meta.output for spec in ruleset.correlations}
        self._specs = {spec.id: spec for spec in ruleset.correlations}
        self.processed = 0

    # -- introspection ---------------------------------------------------------

    @property
    def rule_count(self) -> int:
        return len(self.ruleset)

    @property
    def replay_seconds(self) -> float:
        """Event time of log tail :meth:`replay` needs to rebuild every window.

        A window ending in the current dedup bucket can reach back two timespans
        (bucket start minus one timespan); chained correlations add their inputs'
        spans; late events add the allowed lateness.
        """

        def depth(spec: CorrelationSpec) -> float:
            child = max(
                (depth(self._specs[i.rule_id]) for i in spec.inputs if i.is_correlation),
                default=0.0,
            )
            return 2 * spec.timespan + child

        spans = [depth(spec) for spec in self._specs.values()]
        return (max(spans) + self.allowed_lateness) if spans else 0.0

    def state_size(self) -> int:
        """Entries held in correlation windows (bounded by eviction)."""
        return sum(state.size() for state in self.states.values())

    # -- processing --------------------------------------------------------------

    def _plan(self, kind: str | None) -> _Plan:
        plan = self._plans.get(kind)
        if plan is None:
            rules = [
                c for c in self._compiled if ALL_KINDS in c.rule.kinds or (kind is not None and kind in c.rule.kinds)
            ]
            plan = self._plans[kind] = _Plan(rules)
        return plan

    def matching_rules(self, event: dict[str, Any]) -> list[DetectionRule]:
        """Detection rules (output or not) whose condition the event satisfies."""
        source = event.get("source")
        kind = source.get("kind") if type(source) is dict else None
        return [c.rule for c in self._plan(kind).candidates(event) if c.rule.pred(event)]

    def process(self, index: int, event: dict[str, Any]) -> list[Alert]:
        """Evaluate every applicable rule on the event at log position ``index``."""
        self.processed += 1
        source = event.get("source")
        kind = source.get("kind") if type(source) is dict else None
        plan = self._plans.get(kind) or self._plan(kind)
        alerts: list[Alert] = []
        ts: float | None = None
        for c in plan.candidates(event):
            if not c.rule.pred(event):
                continue
            if c.output:
                meta = c.rule.meta
                time = event.get("time")
                alerts.append(
                    Alert(
                        rule_id=meta.id,
                        title=meta.title,
                        level=meta.level,
                        tags=meta.tags,
                        type="detection",
                        key=f"{meta.id}:{index}",
                        indexes=(index,),
                        first_time=time if isinstance(time, str) else None,
                        last_time=time if isinstance(time, str) else None,
                    )
                )
            if c.feeds:
                if ts is None:
                    ts = parse_time(event.get("time"))
                    if ts is None:
                        continue
                for feed in c.feeds:
                    state = feed.state
                    group = state.group_of(feed.pos, event)
                    if group is None:
                        continue
                    hits = state.add(feed.pos, ts, (index,), group, state.value_of(feed.pos, event))
                    for hit in hits:
                        self._raise(state.spec, hit, alerts)
        return alerts

    def _raise(self, spec: CorrelationSpec, hit: CorrelationHit, alerts: list[Alert]) -> None:
        meta = spec.meta
        alert = Alert(
            rule_id=meta.id,
            title=meta.title,
            level=meta.level,
            tags=meta.tags,
            type=spec.type,
            key=hit.key,
            indexes=hit.indexes,
            first_time=format_time(hit.first_ts),
            last_time=format_time(hit.last_ts),
            group=hit.group,
            group_key=hit.group_key,
            value=hit.value,
            first_ts=hit.first_ts,
            last_ts=hit.last_ts,
        )
        if meta.output:
            alerts.append(alert)
        # chained correlations: the alert is an input of its parents
        parent_source = {"group": hit.group}
        for feed in self._feeds.get(meta.id, ()):
            state = feed.state
            group = state.group_of(feed.pos, parent_source)
            if group is None:
                continue
            for parent_hit in state.add(
                feed.pos,
                hit.last_ts,
                hit.indexes,
                group,
                state.value_of(feed.pos, parent_source),
            ):
                self._raise(state.spec, parent_hit, alerts)

    def replay(
        self,
        events: Iterable[tuple[int, dict[str, Any]]],
        emitted: Container[str] | None = None,
    ) -> list[Alert]:
        """Rebuild window state from the log's tail after a restart.

        ``events`` are ``(index, event)`` pairs in log order covering at least
        :attr:`replay_seconds` of event time before the last processed event.
        Alerts raised while replaying are returned only if ``emitted`` (the keys
        already stored, e.g. a set or a store-backed container) does not hold their
        key: those are the alerts a crash lost. With ``emitted=None`` every replayed
        alert is treated as already delivered and nothing is returned.
        """
        missed: list[Alert] = []
        for index, event in events:
            for alert in self.process(index, event):
                if emitted is not None and alert.key not in emitted:
                    missed.append(alert)
        return missed
