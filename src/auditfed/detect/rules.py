"""Load Sigma rule files with pySigma and compile them for the streaming engine.

Rules are YAML files (SigmaHQ ``sigma-specification``: detection rules, and
correlation rules per the Sigma correlation rules specification v2), several
documents per file allowed. pySigma parses and validates them; detection rules are
then compiled by :mod:`auditfed.detect.matchers` into predicates, correlation rules
into :class:`CorrelationSpec` for :mod:`auditfed.detect.correlation`.

A rule that fails to parse, references an unknown rule, names a logsource auditfed
does not map, or uses a construct the matcher does not implement is refused with a
:class:`~auditfed.detect.errors.RuleError` naming the rule and the construct; the
other rules still load.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from sigma.collection import SigmaCollection
from sigma.correlations import (
    SigmaCorrelationCondition,
    SigmaCorrelationConditionOperator,
    SigmaCorrelationRule,
    SigmaCorrelationType,
)
from sigma.exceptions import SigmaError, SigmaRuleLocation
from sigma.rule import SigmaRule

from auditfed.detect.errors import Diagnostic, RuleError, UnsupportedConstruct
from auditfed.detect.fields import Getter, compile_path
from auditfed.detect.logsources import LogsourceMap
from auditfed.detect.matchers import DetectionCompiler, Node

__all__ = [
    "CorrelationSpec",
    "DetectionRule",
    "RuleSet",
    "compile_collection",
    "load_collection",
    "load_rules",
    "rule_files",
]

RULE_SUFFIXES = (".yml", ".yaml")

_OPS: dict[SigmaCorrelationConditionOperator, Callable[[float, float], bool]] = {
    SigmaCorrelationConditionOperator.GT: lambda a, b: a > b,
    SigmaCorrelationConditionOperator.GTE: lambda a, b: a >= b,
    SigmaCorrelationConditionOperator.LT: lambda a, b: a < b,
    SigmaCorrelationConditionOperator.LTE: lambda a, b: a <= b,
    SigmaCorrelationConditionOperator.EQ: lambda a, b: a == b,
    SigmaCorrelationConditionOperator.NEQ: lambda a, b: a != b,
}
_MONOTONE_OPS = {SigmaCorrelationConditionOperator.GT, SigmaCorrelationConditionOperator.GTE}


@dataclass(slots=True)
class _Meta:
    id: str
    title: str
    level: str | None
    tags: tuple[str, ...]
    name: str | None
    path: str | None
    #: False when a correlation references the rule without ``generate: true``.
    output: bool


@dataclass(slots=True)
class DetectionRule:
    """A compiled single-event Sigma rule."""

    meta: _Meta
    kinds: frozenset[str]
    condition: Node
    #: Sigma field name → getter on the event (logsource root and mappings applied).
    field_getter: Callable[[str], Getter]
    sigma: SigmaRule = field(repr=False)

    @property
    def id(self) -> str:
        return self.meta.id

    def matches(self, event: dict[str, Any]) -> bool:
        """Whether the rule's condition holds for ``event`` (kinds not checked)."""
        return self.condition.holds(event)


@dataclass(slots=True)
class CorrelationInput:
    """One rule referenced by a correlation, with how to read its group-by values."""

    rule_id: str
    is_correlation: bool
    #: per group-by field: getter on the event (detection input) or the child's group
    group_getters: list[Getter]
    value_getter: Getter | None


@dataclass(slots=True)
class CorrelationSpec:
    """A compiled Sigma correlation rule."""

    meta: _Meta
    type: str
    timespan: float
    group_by: tuple[str, ...]
    inputs: list[CorrelationInput]
    op: Callable[[float, float], bool]
    threshold: float
    value_field: str | None
    sigma: SigmaCorrelationRule = field(repr=False)

    @property
    def id(self) -> str:
        return self.meta.id


@dataclass(slots=True)
class RuleSet:
    """Everything loaded from a set of rule paths."""

    detections: list[DetectionRule] = field(default_factory=list)
    correlations: list[CorrelationSpec] = field(default_factory=list)
    errors: list[RuleError] = field(default_factory=list)
    warnings: list[Diagnostic] = field(default_factory=list)
    #: path of each accepted rule id (for diagnostics)
    paths: dict[str, str | None] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.detections) + len(self.correlations)


def rule_files(paths: Iterable[str | Path]) -> list[Path]:
    """Expand files and folders (recursively) into a sorted list of rule files."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*") if p.suffix in RULE_SUFFIXES and p.is_file()))
        else:
            found.append(path)
    return found


def _rule_id(rule: SigmaRule | SigmaCorrelationRule) -> str:
    if rule.id is not None:
        return str(rule.id)
    if rule.name:
        return rule.name
    return rule.title


def _meta(rule: SigmaRule | SigmaCorrelationRule, path: str | None) -> _Meta:
    return _Meta(
        id=_rule_id(rule),
        title=rule.title,
        level=rule.level.name.lower() if rule.level is not None else None,
        tags=tuple(str(t) for t in rule.tags),
        name=rule.name,
        path=path,
        output=bool(rule._output),
    )


def _error(rule: Any, path: str | None, message: str, construct: str | None = None) -> RuleError:
    return RuleError(
        message,
        rule_id=str(rule.id) if getattr(rule, "id", None) else getattr(rule, "name", None),
        title=getattr(rule, "title", None),
        path=path,
        construct=construct,
    )


def load_collection(
    paths: Iterable[str | Path],
    texts: Iterable[tuple[str, str]] = (),
) -> tuple[SigmaCollection, dict[int, str | None], list[RuleError]]:
    """Parse rule files (and ``(name, yaml text)`` pairs) into one collection.

    Returns the collection (references not yet resolved), each rule's source path
    keyed by ``id(rule)``, and the errors of documents that did not parse.
    """
    sources: list[tuple[str, str]] = []
    errors: list[RuleError] = []
    for path in rule_files(paths):
        try:
            sources.append((str(path), path.read_text(encoding="utf-8")))
        except OSError as exc:
            errors.append(RuleError(f"cannot read rule file: {exc}", path=str(path)))
    sources.extend(texts)
    collections: list[SigmaCollection] = []
    where: dict[int, str | None] = {}
    for name, text in sources:
        try:
            documents = [d for d in yaml.safe_load_all(text) if d is not None]
        except yaml.YAMLError as exc:
            errors.append(RuleError(f"invalid YAML: {exc}", path=name, construct="yaml"))
            continue
        if not all(isinstance(d, dict) for d in documents):
            errors.append(RuleError("a rule document must be a mapping", path=name))
            continue
        try:
            collection = SigmaCollection.from_dicts(
                documents,
                collect_errors=True,
                source=SigmaRuleLocation(name),
                resolve_references=False,
            )
        except SigmaError as exc:
            errors.append(RuleError(str(exc), path=name, construct=type(exc).__name__))
            continue
        rule_errors = {id(e) for rule in collection.rules for e in rule.errors}
        for error in collection.errors:
            if id(error) not in rule_errors:
                errors.append(RuleError(str(error), path=name, construct=type(error).__name__))
        good = []
        for rule in collection.rules:
            if rule.errors:
                for error in rule.errors:
                    errors.append(_error(rule, name, str(error), type(error).__name__))
                continue
            where[id(rule)] = name
            good.append(rule)
        collection.rules = good
        collections.append(collection)
    merged = SigmaCollection.merge(collections, resolve_references=False)
    return merged, where, errors


def load_rules(
    paths: Iterable[str | Path] = (),
    *,
    texts: Iterable[tuple[str, str]] = (),
    logsources: LogsourceMap | None = None,
) -> RuleSet:
    """Load and compile every rule under ``paths``; refused rules land in ``errors``."""
    collection, where, errors = load_collection(paths, texts)
    ruleset = compile_collection(collection, where, logsources or LogsourceMap())
    ruleset.errors[:0] = errors
    return ruleset


def compile_collection(
    collection: SigmaCollection,
    where: dict[int, str | None] | None = None,
    logsources: LogsourceMap | None = None,
) -> RuleSet:
    """Compile a pySigma collection (detection and correlation rules)."""
    where = where or {}
    logsources = logsources or LogsourceMap()
    result = RuleSet()
    seen_ids: dict[str, str | None] = {}
    rules = list(collection.rules)
    for rule in rules:
        rid = _rule_id(rule)
        if rid in seen_ids:
            result.warnings.append(
                Diagnostic(
                    "warning",
                    f"duplicate rule id {rid} (also in {seen_ids[rid]})",
                    path=where.get(id(rule)),
                    rule_id=rid,
                    title=rule.title,
                )
            )
        seen_ids.setdefault(rid, where.get(id(rule)))
    # Resolve correlation references (marks referenced rules without output).
    broken: set[int] = set()
    for rule in rules:
        if isinstance(rule, SigmaCorrelationRule):
            try:
                rule.resolve_rule_references(collection)
            except SigmaError as exc:
                result.errors.append(_error(rule, where.get(id(rule)), str(exc), "correlation.rules"))
                broken.add(id(rule))
    compiled: dict[int, DetectionRule | CorrelationSpec] = {}
    # Detection rules first, then correlations in dependency order.
    for rule in rules:
        if isinstance(rule, SigmaRule):
            try:
                detection = _compile_detection(rule, where.get(id(rule)), logsources)
            except RuleError as exc:
                result.errors.append(exc)
                broken.add(id(rule))
                continue
            compiled[id(rule)] = detection
            result.detections.append(detection)
            result.paths[detection.id] = detection.meta.path
    pending = [r for r in rules if isinstance(r, SigmaCorrelationRule) and id(r) not in broken]
    while pending:
        progressed = False
        for rule in list(pending):
            refs = [ref.rule for ref in rule.referenced_rules]
            if any(id(r) in broken for r in refs):
                result.errors.append(
                    _error(
                        rule,
                        where.get(id(rule)),
                        "references a rule that was refused",
                        "correlation.rules",
                    )
                )
                broken.add(id(rule))
                pending.remove(rule)
                progressed = True
                continue
            if not all(id(r) in compiled for r in refs):
                continue
            try:
                spec = _compile_correlation(rule, where.get(id(rule)), compiled)
            except RuleError as exc:
                result.errors.append(exc)
                broken.add(id(rule))
            else:
                compiled[id(rule)] = spec
                result.correlations.append(spec)
                result.paths[spec.id] = spec.meta.path
            pending.remove(rule)
            progressed = True
        if not progressed:
            for rule in pending:
                result.errors.append(_error(rule, where.get(id(rule)), "correlation references form a cycle"))
            break
    return result


def _compile_detection(rule: SigmaRule, path: str | None, logsources: LogsourceMap) -> DetectionRule:
    source = rule.logsource
    target = logsources.target(source.product, source.service)
    if target is None:
        raise _error(
            rule,
            path,
            "no auditfed source kind for logsource "
            f"product={source.product} service={source.service} category={source.category}",
            "logsource",
        )
    mapping = logsources.mapping(source.product, source.service)

    def event_path(name: str) -> str:
        return logsources.event_path(target, mapping, name)

    compiler = DetectionCompiler(event_path, target.root)
    try:
        condition = compiler.compile(rule.detection)
    except UnsupportedConstruct as exc:
        raise _error(rule, path, f"unsupported {exc.construct}: {exc.message}", exc.construct) from None
    except SigmaError as exc:
        raise _error(rule, path, str(exc), type(exc).__name__) from None

    def field_getter(name: str) -> Getter:
        return compiler.getter(event_path(name))

    return DetectionRule(
        meta=_meta(rule, path),
        kinds=target.kinds,
        condition=condition,
        field_getter=field_getter,
        sigma=rule,
    )


_SUPPORTED_TYPES = {
    SigmaCorrelationType.EVENT_COUNT: "event_count",
    SigmaCorrelationType.VALUE_COUNT: "value_count",
    SigmaCorrelationType.TEMPORAL: "temporal",
    SigmaCorrelationType.TEMPORAL_ORDERED: "temporal_ordered",
    SigmaCorrelationType.VALUE_SUM: "value_sum",
    SigmaCorrelationType.VALUE_AVG: "value_avg",
}


def _compile_correlation(
    rule: SigmaCorrelationRule,
    path: str | None,
    compiled: dict[int, DetectionRule | CorrelationSpec],
) -> CorrelationSpec:
    ctype = _SUPPORTED_TYPES.get(rule.type)
    if ctype is None:
        raise _error(rule, path, f"correlation type {rule.type.name.lower()} is not supported", "correlation.type")
    condition = rule.condition
    if not isinstance(condition, SigmaCorrelationCondition):
        raise _error(
            rule,
            path,
            "extended (boolean) correlation conditions are not supported",
            "correlation.condition",
        )
    if condition.op not in _MONOTONE_OPS and ctype in ("event_count", "value_count", "temporal"):
        raise _error(
            rule,
            path,
            f"condition '{condition.op.name.lower()}' on {ctype} needs evaluation at window "
            "close; the streaming engine supports gt/gte",
            "correlation.condition",
        )
    refs = rule.referenced_rules
    if ctype == "temporal_ordered":
        needed = condition.count + (1 if condition.op is SigmaCorrelationConditionOperator.GT else 0)
        if condition.op not in _MONOTONE_OPS or needed != len(refs):
            raise _error(
                rule,
                path,
                "temporal_ordered supports only the default condition (all rules, in order)",
                "correlation.condition",
            )
    value_field = condition.fieldref
    if isinstance(value_field, list):
        if len(value_field) != 1:
            raise _error(rule, path, "condition field must name one field", "correlation.field")
        value_field = value_field[0]
    group_by = tuple(rule.group_by or ())
    aliases = {alias.alias: alias for alias in rule.aliases}
    inputs: list[CorrelationInput] = []
    for ref in refs:
        target = compiled[id(ref.rule)]
        names = {ref.reference, target.id}
        if target.meta.name:
            names.add(target.meta.name)

        def field_for(name: str, names: set[str] = names) -> str:
            alias = aliases.get(name)
            if alias is not None:
                for alias_ref, field_name in alias.mapping.items():
                    if alias_ref.reference in names:
                        return field_name
            return name

        if isinstance(target, DetectionRule):
            getters = [target.field_getter(field_for(g)) for g in group_by]
            value_getter = target.field_getter(field_for(value_field)) if value_field else None
            inputs.append(CorrelationInput(target.id, False, getters, value_getter))
        else:
            getters = [compile_path(("group", field_for(g))) for g in group_by]
            value_getter = compile_path(("group", field_for(value_field))) if value_field else None
            inputs.append(CorrelationInput(target.id, True, getters, value_getter))
    return CorrelationSpec(
        meta=_meta(rule, path),
        type=ctype,
        timespan=float(rule.timespan.seconds),
        group_by=group_by,
        inputs=inputs,
        op=_OPS[condition.op],
        threshold=float(condition.count),
        value_field=value_field,
        sigma=rule,
    )
