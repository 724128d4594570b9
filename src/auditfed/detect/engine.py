"""The streaming detection engine: Sigma rules on every committed event, in log order.

:class:`DetectionEngine` evaluates compiled Sigma detection rules (SigmaHQ
specification) and Sigma correlation rules (correlation rules specification v2)
on each stored event as the log commits it, and returns :class:`Alert` objects.

Speed comes from sharing work between rules: the rules that apply to a source kind
are evaluated together as a decision diagram over the event's fields (see
:class:`_Group`), which reads each field once, only while some rule still needs it,
and remembers where each field value leads.

Restart: :meth:`DetectionEngine.replay` feeds the log's tail through the engine to
rebuild correlation windows; alerts whose deterministic key the caller has already
stored are suppressed, so a restart in the middle of a window neither repeats nor
misses an alert. :attr:`DetectionEngine.replay_seconds` says how much event time of
tail is needed.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from auditfed.detect.correlation import CorrelationFeed, CorrelationHit, CorrelationState, format_time, parse_time
from auditfed.detect.fields import MISSING, Getter
from auditfed.detect.logsources import ALL_KINDS, LogsourceMap, LogsourceTarget
from auditfed.detect.matchers import FieldCheck, FieldTest
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
class _Compiled:
    rule: DetectionRule
    feeds: list[CorrelationFeed]
    output: bool


#: Types of values whose place in a decision diagram is remembered. Not numbers or
#: booleans: as dict keys ``True == 1 == 1.0``, but Sigma's tests tell them apart.
_MEMO_TYPES = frozenset({str, type(None), type(MISSING)})
#: Entries a decision diagram remembers before it starts afresh (bounds memory).
MEMO_LIMIT = 65_536


class _Field:
    """An event field a group of rules tests, with every check the rules make on it."""

    __slots__ = ("checks", "get", "key")

    def __init__(self, path: str, get: Getter) -> None:
        #: top-level fields are read inline: a getter call costs more than the lookup
        self.key = None if "." in path else path
        self.get = get
        self.checks: list[tuple[int, FieldTest]] = []

    def mask_of(self, value: Any) -> int:
        """The bits of the checks ``value`` passes."""
        mask = 0
        for bit, test in self.checks:
            if test(value):
                mask |= bit
        return mask


class _Outcome(NamedTuple):
    """Where a walk ends: the rules that may match, in rule order."""

    rules: tuple[_Compiled, ...]
    #: per rule, whether it surely matches; ``None`` when all do (no event check left)
    sure: tuple[bool, ...] | None


class _Step:
    """A node of a decision diagram: read one field, go on by its value.

    ``known`` holds the check masks of the fields read on the way here. Values that
    pass the same checks lead to the same child (``by_mask``), and the child of each
    value seen is remembered (``by_value``): a step costs a field read and a lookup.
    """

    __slots__ = ("by_mask", "by_value", "field", "get", "key", "known")

    def __init__(self, field_: _Field, known: dict[_Field, int]) -> None:
        self.field = field_
        self.key = field_.key
        self.get = field_.get
        self.known = known
        self.by_mask: dict[int, _Step | _Outcome] = {}
        self.by_value: dict[Any, _Step | _Outcome] = {}


class _Group:
    """The rules of one source kind, evaluated as a decision diagram over event fields.

    Every field check of the rules gets a bit. A walk reads the field most undecided
    rules test, goes on by the checks its value passes, and stops when every rule is
    decided: a field is read once for all rules, and only while a rule still needs
    it (an event that fails a rule's first check costs that rule nothing more). For
    CloudTrail the first field read is ``eventName``, which acts as an index. Nodes
    are built on first use, so the diagram holds the paths events take. Rules left
    open only by an event check (keywords, field references) are evaluated on the
    event.
    """

    __slots__ = ("_bits", "_field_of", "_fields", "_remembered", "_root", "rules")

    def __init__(self, rules: list[_Compiled]) -> None:
        self.rules = tuple(rules)
        self._bits: dict[FieldCheck, int] = {}
        self._field_of: dict[FieldCheck, _Field] = {}
        fields: dict[str, _Field] = {}
        for check in _field_checks(rules):
            if check in self._bits:
                continue
            field_ = fields.get(check.path)
            if field_ is None:
                field_ = fields[check.path] = _Field(check.path, check.get)
            self._bits[check] = bit = 1 << len(self._bits)
            field_.checks.append((bit, check.test))
            self._field_of[check] = field_
        self._fields = tuple(fields.values())
        self._remembered = 0
        self._root = self._node({})

    def match(self, event: dict[str, Any]) -> tuple[_Compiled, ...]:
        """The rules whose condition holds for ``event``, in rule order."""
        node = self._root
        while type(node) is _Step:
            key = node.key
            value = event.get(key, MISSING) if key is not None else node.get(event)
            try:
                child = node.by_value.get(value)
            except TypeError:  # a list or object value is not hashable
                child = None
            node = child or self._follow(node, value)
        rules, sure = node
        if sure is None:
            return rules
        return tuple(c for c, certain in zip(rules, sure, strict=True) if certain or c.rule.matches(event))

    def _follow(self, step: _Step, value: Any) -> _Step | _Outcome:
        """The child of ``step`` for a value not seen there yet."""
        mask = step.field.mask_of(value)
        child = step.by_mask.get(mask)
        if child is None:
            child = step.by_mask[mask] = self._node({**step.known, step.field: mask})
            self._remembered += 1
        if type(value) in _MEMO_TYPES:
            step.by_value[value] = child
            self._remembered += 1
        if self._remembered >= MEMO_LIMIT:  # start afresh rather than grow without bound
            self._remembered = 0
            self._root = self._node({})
        return child

    def _node(self, known: dict[_Field, int]) -> _Step | _Outcome:
        """The step reading the next field an open rule needs, or the outcome if none does."""
        truth = self._truth(known)
        rules: list[_Compiled] = []
        sure: list[bool] = []
        open_rules: list[_Compiled] = []
        for c in self.rules:
            result = c.rule.condition.decide(truth)
            if result is None and self._unread(c, known):
                open_rules.append(c)
            elif result is not False:
                rules.append(c)
                sure.append(result is True)
        if open_rules:
            return _Step(self._next_field(open_rules, known), known)
        return _Outcome(tuple(rules), None if all(sure) else tuple(sure))

    def _next_field(self, open_rules: list[_Compiled], known: dict[_Field, int]) -> _Field:
        """The field to read next: the one whose value most often settles open rules.

        Most values pass none of a field's checks, so a field scores by the open rules
        decided when it passes none (a rule's gate such as ``eventName``), then by the
        open rules testing it; a top-level field wins a tie (cheaper to read).
        """
        testing: dict[_Field, list[_Compiled]] = {}
        for c in open_rules:
            for field_ in self._unread(c, known):
                testing.setdefault(field_, []).append(c)

        def score(field_: _Field) -> tuple[int, int, bool]:
            if_none = self._truth({**known, field_: 0})
            settled = sum(1 for c in testing[field_] if c.rule.condition.decide(if_none) is not None)
            return settled, len(testing[field_]), field_.key is not None

        return max((f for f in self._fields if f in testing), key=score)

    def _truth(self, known: dict[_Field, int]) -> Callable[[FieldCheck], bool | None]:
        """A check's result from the known field masks; ``None`` if its field is unread."""
        bits, field_of = self._bits, self._field_of

        def truth(check: FieldCheck) -> bool | None:
            field_ = field_of[check]
            return bool(known[field_] & bits[check]) if field_ in known else None

        return truth

    def _unread(self, c: _Compiled, known: dict[_Field, int]) -> set[_Field]:
        return {self._field_of[check] for check in _field_checks([c])} - known.keys()


def _field_checks(rules: Iterable[_Compiled]) -> Iterator[FieldCheck]:
    for c in rules:
        for leaf in c.rule.condition.leaves():
            if isinstance(leaf, FieldCheck):
                yield leaf


def _detection_alert(rule: DetectionRule, index: int, time: Any) -> Alert:
    meta = rule.meta
    return Alert(
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
        feeds: dict[str, list[CorrelationFeed]] = {}
        for spec in ruleset.correlations:
            for pos, inp in enumerate(spec.inputs):
                feeds.setdefault(inp.rule_id, []).append(self.states[spec.id].feeds[pos])
        self._feeds = feeds
        self._compiled = [_Compiled(rule, feeds.get(rule.id, []), rule.meta.output) for rule in ruleset.detections]
        self._groups: dict[str | None, _Group] = {}
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

    def _group(self, kind: str | None) -> _Group:
        group = self._groups.get(kind)
        if group is None:
            rules = [
                c for c in self._compiled if ALL_KINDS in c.rule.kinds or (kind is not None and kind in c.rule.kinds)
            ]
            group = self._groups[kind] = _Group(rules)
        return group

    def matching_rules(self, event: dict[str, Any]) -> list[DetectionRule]:
        """Detection rules (output or not) whose condition the event satisfies."""
        source = event.get("source")
        kind = source.get("kind") if type(source) is dict else None
        return [c.rule for c in self._group(kind).match(event)]

    def process(self, index: int, event: dict[str, Any]) -> list[Alert]:
        """Evaluate every applicable rule on the event at log position ``index``."""
        self.processed += 1
        source = event.get("source")
        kind = source.get("kind") if type(source) is dict else None
        group = self._groups.get(kind) or self._group(kind)
        matched = group.match(event)
        return self._act(index, event, matched) if matched else []

    def _act(self, index: int, event: dict[str, Any], matched: Sequence[_Compiled]) -> list[Alert]:
        """Alerts of the matched rules, and their matches fed to the correlations."""
        alerts: list[Alert] = []
        ts: float | None = None
        for c in matched:
            if c.output:
                alerts.append(_detection_alert(c.rule, index, event.get("time")))
            for feed in c.feeds:
                group = feed.group_of(event)
                if group is None:
                    continue
                if ts is None:  # parsed once, and only for a correlation that takes the event
                    ts = parse_time(event.get("time"))
                    if ts is None:
                        break
                for hit in feed.add(ts, (index,), group, event):
                    self._raise(feed.state.spec, hit, alerts)
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
            group = feed.group_of(parent_source)
            if group is not None:
                for parent_hit in feed.add(hit.last_ts, hit.indexes, group, parent_source):
                    self._raise(feed.state.spec, parent_hit, alerts)

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
