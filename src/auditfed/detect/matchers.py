# Explicit loops instead of any()/all() generators: they are measurably faster here.
# ruff: noqa: SIM110
"""Compile Sigma detections into plain Python predicates over event dicts.

Implements the matching semantics of the Sigma specification (SigmaHQ
``sigma-specification``, "Detection", "Value Modifiers" appendix) without any query
backend: a rule becomes a tree of closures over the stored event. pySigma has
already applied the value modifiers (``contains``/``startswith``/``endswith`` as
wildcards, ``base64``/``base64offset``/``windash``/``wide``/``utf16*`` as expanded
strings, ``re``/``cidr``/``gt``.../``exists``/``fieldref``/``cased`` as typed
values), so this module maps each resulting value type to a test:

* strings compare case-insensitively unless ``cased`` (or the value is Base64,
  which is case-sensitive by nature); ``*``/``?`` wildcards become
  ``startswith``/``endswith``/``in`` or an anchored regex;
* ``re`` is a Python regex searched anywhere in the value, case-sensitive unless
  ``|i``; ``|m``/``|s`` set MULTILINE/DOTALL;
* ``null`` matches an absent field or JSON null, ``''`` only the empty string;
* a list value in the event matches if any element matches;
* ``keywords`` (values without a field) search every scalar of the record.

Anything else (placeholders from ``expand``, query expressions) raises
:class:`~auditfed.detect.errors.UnsupportedConstruct`.

Each compiled node also yields a *requirement*: a field path and the set of
lower-cased values one of which the event must hold for the node to match. The
engine indexes rules by these so that an event is only tested against rules it
can possibly satisfy.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sigma.conditions import (
    ConditionAND,
    ConditionIdentifier,
    ConditionNOT,
    ConditionOR,
    ConditionSelector,
)
from sigma.modifiers import (
    SigmaBase64Modifier,
    SigmaBase64OffsetModifier,
)
from sigma.rule.detection import SigmaDetection, SigmaDetectionItem, SigmaDetections
from sigma.types import (
    CompareOperators,
    Placeholder,
    SigmaBool,
    SigmaCasedString,
    SigmaCIDRExpression,
    SigmaCompareExpression,
    SigmaExists,
    SigmaExpansion,
    SigmaFieldReference,
    SigmaNull,
    SigmaNumber,
    SigmaRegularExpression,
    SigmaRegularExpressionFlag,
    SigmaString,
    SigmaTimestampPart,
    SpecialChars,
    TimestampPart,
)

from auditfed.detect.errors import UnsupportedConstruct
from auditfed.detect.fields import MISSING, Getter, compile_path, string_leaves, text_of

__all__ = ["Compiled", "DetectionCompiler", "Pred", "Requirement"]

Pred = Callable[[dict[str, Any]], bool]
Scalar = Callable[[Any], bool]
FieldTest = Callable[[Any, dict[str, Any]], bool]
#: field path → lower-cased values, one of which the event must hold.
Requirement = dict[str, frozenset[str]] | None

_WILD = SpecialChars.WILDCARD_MULTI
_ONE = SpecialChars.WILDCARD_SINGLE
_RE_FLAGS = {
    SigmaRegularExpressionFlag.IGNORECASE: re.IGNORECASE,
    SigmaRegularExpressionFlag.MULTILINE: re.MULTILINE,
    SigmaRegularExpressionFlag.DOTALL: re.DOTALL,
}
_CASED_MODIFIERS = (SigmaBase64Modifier, SigmaBase64OffsetModifier)


@dataclass(slots=True)
class Compiled:
    """A compiled node: predicate, index requirement and a rough cost for ordering."""

    pred: Pred
    req: Requirement = None
    cost: int = 1


# --------------------------------------------------------------------------- values


def _string_scalar(value: SigmaString, cased: bool) -> tuple[Scalar, str | None, int]:
    """Scalar test for a (wildcard) string; also the plain value if it has no wildcards."""
    parts = value.s
    for part in parts:
        if isinstance(part, Placeholder):
            raise UnsupportedConstruct("expand", f"placeholder %{part.name}% needs a pipeline to expand it")
    fold = (lambda s: s) if cased else str.lower
    strs = [p for p in parts if isinstance(p, str)]
    specials = [p for p in parts if not isinstance(p, str)]
    if not specials:
        want = fold("".join(strs))
        if cased:

            def eq_cased(v: Any) -> bool:
                if type(v) is str:
                    return v == want
                return text_of(v) == want

            return eq_cased, None, 0

        def eq(v: Any) -> bool:
            if type(v) is str:
                return v.lower() == want
            t = text_of(v)
            return t is not None and t.lower() == want

        return eq, want, 0

    if _ONE not in specials:
        shape = tuple(isinstance(p, str) for p in parts)
        if shape == (False,):  # "*": any value that is text

            def anything(v: Any) -> bool:
                return text_of(v) is not None

            return anything, None, 0
        if shape == (False, True, False):
            sub = fold(parts[1])

            def contains(v: Any) -> bool:
                t = v if type(v) is str else text_of(v)
                return t is not None and sub in (t if cased else t.lower())

            return contains, None, 1
        if shape == (True, False):
            prefix = fold(parts[0])

            def startswith(v: Any) -> bool:
                t = v if type(v) is str else text_of(v)
                return t is not None and (t if cased else t.lower()).startswith(prefix)

            return startswith, None, 1
        if shape == (False, True):
            suffix = fold(parts[1])

            def endswith(v: Any) -> bool:
                t = v if type(v) is str else text_of(v)
                return t is not None and (t if cased else t.lower()).endswith(suffix)

            return endswith, None, 1

    pattern = "".join(re.escape(p) if isinstance(p, str) else (".*" if p is _WILD else ".") for p in parts)
    rx = re.compile(pattern, re.DOTALL | (0 if cased else re.IGNORECASE))
    full = rx.fullmatch

    def wildcard(v: Any) -> bool:
        t = v if type(v) is str else text_of(v)
        return t is not None and full(t) is not None

    return wildcard, None, 2


def _number_scalar(value: SigmaNumber) -> Scalar:
    number = value.number
    text = str(number)

    def eq(v: Any) -> bool:
        kind = type(v)
        if kind is int or kind is float:
            return v == number
        if kind is str:
            if v == text:
                return True
            try:
                return float(v) == number
            except ValueError:
                return False
        return False

    return eq


def _bool_scalar(value: SigmaBool) -> Scalar:
    want = bool(value.boolean)
    text = "true" if want else "false"

    def eq(v: Any) -> bool:
        if type(v) is bool:
            return v is want
        return type(v) is str and v.lower() == text

    return eq


def _regex_scalar(value: SigmaRegularExpression) -> Scalar:
    flags = 0
    for flag in value.flags:
        flags |= _RE_FLAGS[flag]
    try:
        rx = re.compile(value.regexp.to_plain(), flags)
    except re.error as exc:
        raise UnsupportedConstruct("re", f"invalid regular expression: {exc}") from None
    search = rx.search

    def match(v: Any) -> bool:
        t = v if type(v) is str else text_of(v)
        return t is not None and search(t) is not None

    return match


def _cidr_scalar(value: SigmaCIDRExpression) -> Scalar:
    network = value.network
    version = network.version
    low = int(network.network_address)
    high = int(network.broadcast_address)
    parse = ipaddress.ip_address

    def inside(v: Any) -> bool:
        if type(v) is not str:
            return False
        try:
            address = parse(v.split("%", 1)[0])
        except ValueError:
            return False
        return address.version == version and low <= int(address) <= high

    return inside


_COMPARE = {
    CompareOperators.LT: lambda a, b: a < b,
    CompareOperators.LTE: lambda a, b: a <= b,
    CompareOperators.GT: lambda a, b: a > b,
    CompareOperators.GTE: lambda a, b: a >= b,
    CompareOperators.NEQ: lambda a, b: a != b,
}


def _as_number(v: Any) -> float | int | None:
    kind = type(v)
    if kind is int or kind is float:
        return v
    if kind is str:
        try:
            return float(v)
        except ValueError:
            return None
    return None


def _compare_scalar(value: SigmaCompareExpression) -> Scalar:
    op = _COMPARE[value.op]
    number = value.number.number

    def compare(v: Any) -> bool:
        n = _as_number(v)
        return n is not None and op(n, number)

    return compare


def _timestamp(v: Any) -> datetime | None:
    kind = type(v)
    if kind is str:
        try:
            parsed = datetime.fromisoformat(v)
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    if kind is int or kind is float:
        seconds = v / 1000 if v > 1e11 else v  # epoch milliseconds or seconds
        return datetime.fromtimestamp(seconds, UTC)
    return None


_PARTS: dict[TimestampPart, Callable[[datetime], int]] = {
    TimestampPart.MINUTE: lambda d: d.minute,
    TimestampPart.HOUR: lambda d: d.hour,
    TimestampPart.DAY: lambda d: d.day,
    TimestampPart.WEEK: lambda d: d.isocalendar()[1],
    TimestampPart.MONTH: lambda d: d.month,
    TimestampPart.YEAR: lambda d: d.year,
}


def _timestamp_part_scalar(value: SigmaTimestampPart) -> Scalar:
    part = _PARTS[value.timestamp_part]
    want = value.number

    def eq(v: Any) -> bool:
        moment = _timestamp(v)
        return moment is not None and part(moment) == want

    return eq


def _lift(scalar: Scalar) -> FieldTest:
    def test(v: Any, _ev: dict[str, Any]) -> bool:
        if type(v) is list:
            for x in v:
                if scalar(x):
                    return True
            return False
        return scalar(v)

    return test


def _is_present(v: Any) -> bool:
    return v is not MISSING and v is not None and v != []


# --------------------------------------------------------------------------- compiler


class DetectionCompiler:
    """Compile the detection section of one Sigma rule into a :class:`Compiled`.

    ``event_path`` maps a Sigma field name to an absolute dotted path in the stored
    event (logsource root and field mappings applied); ``keyword_root`` is the path
    whose scalars keyword detections search ("" = the whole event).
    """

    def __init__(self, event_path: Callable[[str], str], keyword_root: str) -> None:
        self.event_path = event_path
        self.keyword_root = keyword_root
        self._getters: dict[str, Getter] = {}

    def getter(self, path: str) -> Getter:
        get = self._getters.get(path)
        if get is None:
            get = self._getters[path] = compile_path(path)
        return get

    # -- condition -------------------------------------------------------------

    def compile(self, detections: SigmaDetections) -> Compiled:
        compiled_detections: dict[str, Compiled] = {}

        def by_name(name: str) -> Compiled:
            if name not in compiled_detections:
                try:
                    detection = detections.detections[name]
                except KeyError:
                    raise UnsupportedConstruct("condition", f"detection '{name}' is not defined") from None
                compiled_detections[name] = self._detection(detection)
            return compiled_detections[name]

        conditions = [
            self._condition(cond.parse(postprocess=False), detections, by_name) for cond in detections.parsed_condition
        ]
        return _or(conditions)

    def _condition(
        self,
        node: Any,
        detections: SigmaDetections,
        by_name: Callable[[str], Compiled],
    ) -> Compiled:
        if isinstance(node, ConditionIdentifier):
            return by_name(node.identifier)
        if isinstance(node, ConditionSelector):
            identifiers = node.resolve_referenced_detections(detections)
            if not identifiers:
                raise UnsupportedConstruct(
                    "condition",
                    f"selector '{node.args[0]} of {node.pattern}' matches no detection",
                )
            children = [by_name(i.identifier) for i in identifiers]
            return _and(children) if node.cond_class is ConditionAND else _or(children)
        if isinstance(node, ConditionNOT):
            return _not(self._condition(node.args[0], detections, by_name))
        if isinstance(node, ConditionAND):
            return _and([self._condition(a, detections, by_name) for a in node.args])
        if isinstance(node, ConditionOR):
            return _or([self._condition(a, detections, by_name) for a in node.args])
        raise UnsupportedConstruct("condition", f"unsupported condition element {node!r}")

    # -- detections ------------------------------------------------------------

    def _detection(self, detection: SigmaDetection) -> Compiled:
        children = [
            self._detection(item) if isinstance(item, SigmaDetection) else self._item(item)
            for item in detection.detection_items
        ]
        if detection.item_linking is ConditionOR:
            return _or(children)
        return _and(children)

    def _item(self, item: SigmaDetectionItem) -> Compiled:
        cased_values = any(m in _CASED_MODIFIERS for m in item.modifiers)
        if item.field is None:  # noqa: SIM108
            compiled = self._keywords(item, cased_values)
        else:
            compiled = self._field_item(item, cased_values)
        if item.negated:
            compiled = _not(compiled)
        return compiled

    def _values(
        self, values: list[Any], field: str | None, cased_values: bool, grouped: bool
    ) -> tuple[list[Scalar], set[str], list[FieldTest], int]:
        """Split values into scalar tests, plain case-insensitive strings and field tests.

        With ``grouped`` (AND-linked values), each expansion (``base64offset``,
        ``windash``) stays one OR-linked test, as the specification requires.
        Returns (scalars, plain strings, field tests, cost).
        """
        scalars: list[Scalar] = []
        plain: set[str] = set()
        tests: list[FieldTest] = []
        cost = 0
        for value in values:
            if isinstance(value, SigmaExpansion):
                s, p, t, c = self._values(value.values, field, cased_values, False)
                cost = max(cost, c)
                if not grouped:
                    scalars.extend(s)
                    plain |= p
                    tests.extend(t)
                elif t:
                    tests.append(_field_or([_lift(_scalar_or(s, p)), *t] if (s or p) else t))
                else:
                    scalars.append(_scalar_or(s, p))
                continue
            if isinstance(value, SigmaString):
                cased = cased_values or isinstance(value, SigmaCasedString)
                scalar, want, c = _string_scalar(value, cased)
                cost = max(cost, c)
                if want is not None:
                    plain.add(want)
                else:
                    scalars.append(scalar)
                continue
            if isinstance(value, SigmaNull):
                tests.append(lambda v, _ev: v is MISSING or v is None)
            elif isinstance(value, SigmaExists):
                want_exists = bool(value.exists)
                tests.append(lambda v, _ev, w=want_exists: _is_present(v) is w)
            elif isinstance(value, SigmaBool):
                scalars.append(_bool_scalar(value))
            elif isinstance(value, SigmaTimestampPart):
                scalars.append(_timestamp_part_scalar(value))
                cost = max(cost, 2)
            elif isinstance(value, SigmaNumber):
                scalars.append(_number_scalar(value))
            elif isinstance(value, SigmaRegularExpression):
                scalars.append(_regex_scalar(value))
                cost = max(cost, 2)
            elif isinstance(value, SigmaCIDRExpression):
                scalars.append(_cidr_scalar(value))
                cost = max(cost, 2)
            elif isinstance(value, SigmaCompareExpression):
                scalars.append(_compare_scalar(value))
            elif isinstance(value, SigmaFieldReference):
                if field is None:
                    raise UnsupportedConstruct("fieldref", "field reference needs a field")
                tests.append(self._fieldref(value))
                cost = max(cost, 2)
            else:
                raise UnsupportedConstruct(type(value).__name__, "value type is not supported by auditfed's matcher")
        return scalars, plain, tests, cost

    def _field_item(self, item: SigmaDetectionItem, cased_values: bool) -> Compiled:
        assert item.field is not None
        path = self.event_path(item.field)
        get = self.getter(path)
        if not item.value:  # empty list of values: field is null
            return Compiled(lambda ev: (v := get(ev)) is MISSING or v is None, None, 0)
        linking_and = item.value_linking is ConditionAND
        scalars, plain, tests, cost = self._values(item.value, item.field, cased_values, linking_and)
        if not linking_and:
            req: Requirement = {path: frozenset(plain)} if plain and not (scalars or tests) else None
            if not tests:
                scalar = _scalar_or(scalars, plain)

                def pred(ev: dict[str, Any]) -> bool:
                    v = get(ev)
                    if type(v) is list:
                        for x in v:
                            if scalar(x):
                                return True
                        return False
                    return scalar(v)

                return Compiled(pred, req, cost)
            field_tests = ([_lift(_scalar_or(scalars, plain))] if scalars or plain else []) + tests
            test = _field_or(field_tests)
            return Compiled(lambda ev: test(get(ev), ev), req, cost)
        # 'all': every value must match (each may match a different list element)
        field_tests = [_lift(_scalar_or([], {p})) for p in sorted(plain)]
        field_tests += [_lift(s) for s in scalars] + tests
        req = {path: frozenset({min(plain)})} if plain else None
        tests_t = tuple(field_tests)

        def pred_all(ev: dict[str, Any]) -> bool:
            v = get(ev)
            for t in tests_t:
                if not t(v, ev):
                    return False
            return True

        return Compiled(pred_all, req, cost)

    def _keywords(self, item: SigmaDetectionItem, cased_values: bool) -> Compiled:
        # Keywords are a full-text search: a keyword matches anywhere inside a value.
        values = []
        for value in item.value:
            if isinstance(value, SigmaString):
                wrapped = value.__class__()
                head = [] if value.startswith(_WILD) else [_WILD]
                tail = [] if value.endswith(_WILD) else [_WILD]
                wrapped.s = [*head, *value.s, *tail]
                values.append(wrapped)
            else:
                values.append(value)
        linking_and = item.value_linking is ConditionAND
        scalars, plain, tests, _ = self._values(values, None, cased_values, linking_and)
        if tests:
            raise UnsupportedConstruct("keywords", "keyword values must be strings or regexes")
        root = self.getter(self.keyword_root) if self.keyword_root else (lambda ev: ev)
        preds = [_lift(s) for s in scalars] + [_lift(_scalar_or([], {p})) for p in plain]

        def pred(ev: dict[str, Any]) -> bool:
            leaves = string_leaves(root(ev))
            if linking_and:
                return all(p(leaves, ev) for p in preds)
            return any(p(leaves, ev) for p in preds)

        return Compiled(pred, None, 3)

    def _fieldref(self, value: SigmaFieldReference) -> FieldTest:
        other = self.getter(self.event_path(value.field))
        starts, ends = value.starts_with, value.ends_with

        def same(a: Any, b: Any) -> bool:
            ta, tb = text_of(a), text_of(b)
            if ta is None or tb is None:
                return False
            ta, tb = ta.lower(), tb.lower()
            if starts and ends:
                return tb in ta
            if starts:
                return ta.startswith(tb)
            if ends:
                return ta.endswith(tb)
            return ta == tb

        def test(v: Any, ev: dict[str, Any]) -> bool:
            w = other(ev)
            left = v if type(v) is list else [v]
            right = w if type(w) is list else [w]
            return any(same(a, b) for a in left for b in right)

        return test


# --------------------------------------------------------------------------- combinators


def _scalar_or(scalars: list[Scalar], plain: set[str]) -> Scalar:
    wanted = frozenset(plain)
    if wanted and not scalars:
        if len(wanted) == 1:
            (only,) = wanted

            def eq(v: Any) -> bool:
                if type(v) is str:
                    return v.lower() == only
                t = text_of(v)
                return t is not None and t.lower() == only

            return eq

        def member(v: Any) -> bool:
            if type(v) is str:
                return v.lower() in wanted
            t = text_of(v)
            return t is not None and t.lower() in wanted

        return member
    if not wanted and len(scalars) == 1:
        return scalars[0]
    tests = tuple(scalars)

    def any_of(v: Any) -> bool:
        if wanted:
            t = v if type(v) is str else text_of(v)
            if t is not None and t.lower() in wanted:
                return True
        for s in tests:
            if s(v):
                return True
        return False

    return any_of


def _field_or(tests: list[FieldTest]) -> FieldTest:
    if len(tests) == 1:
        return tests[0]
    tests_t = tuple(tests)

    def any_test(v: Any, ev: dict[str, Any]) -> bool:
        for t in tests_t:
            if t(v, ev):
                return True
        return False

    return any_test


def _merge_and(reqs: list[Requirement]) -> Requirement:
    merged: dict[str, frozenset[str]] = {}
    for req in reqs:
        if not req:
            continue
        for path, values in req.items():
            merged[path] = merged[path] & values if path in merged else values
    return merged or None


def _merge_or(reqs: list[Requirement]) -> Requirement:
    if not reqs or any(not r for r in reqs):
        return None
    common = set(reqs[0])  # type: ignore[arg-type]
    for req in reqs[1:]:
        common &= set(req)  # type: ignore[arg-type]
    if not common:
        return None
    return {path: frozenset().union(*(r[path] for r in reqs)) for path in common}  # type: ignore[index]


def _and(children: list[Compiled]) -> Compiled:
    if len(children) == 1:
        return children[0]
    ordered = sorted(children, key=lambda c: c.cost)
    preds = tuple(c.pred for c in ordered)
    req = _merge_and([c.req for c in children])
    cost = max(c.cost for c in children)
    if len(preds) == 2:
        a, b = preds
        return Compiled(lambda ev: a(ev) and b(ev), req, cost)
    if len(preds) == 3:
        a, b, c = preds
        return Compiled(lambda ev: a(ev) and b(ev) and c(ev), req, cost)

    def all_of(ev: dict[str, Any]) -> bool:
        for p in preds:
            if not p(ev):
                return False
        return True

    return Compiled(all_of, req, cost)


def _or(children: list[Compiled]) -> Compiled:
    if len(children) == 1:
        return children[0]
    ordered = sorted(children, key=lambda c: c.cost)
    preds = tuple(c.pred for c in ordered)
    req = _merge_or([c.req for c in children])
    cost = max(c.cost for c in children)
    if len(preds) == 2:
        a, b = preds
        return Compiled(lambda ev: a(ev) or b(ev), req, cost)

    def any_of(ev: dict[str, Any]) -> bool:
        for p in preds:
            if p(ev):
                return True
        return False

    return Compiled(any_of, req, cost)


def _not(child: Compiled) -> Compiled:
    pred = child.pred
    return Compiled(lambda ev: not pred(ev), None, child.cost)
