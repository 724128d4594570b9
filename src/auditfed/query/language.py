"""The auditfed query language.

    action:db.* actor:alice@corp.example outcome:denied time>=2026-11-01 time<now-1h
    (service:billing-api OR service:web-gateway) NOT env:dev

Terms are ``field:value`` (``*`` is a wildcard; quote values with spaces) or a time
comparison ``time>=``, ``time>``, ``time<=``, ``time<`` against an RFC 3339 time, a
date (``2026-11-01``, midnight UTC) or ``now`` with an optional ``-Nd``, ``-Nh``,
``-Nm``, ``-Ns`` offset. Terms are joined by AND unless ``OR`` stands between them;
``NOT`` (or a leading ``-``) negates; parentheses group. Fields: see
:data:`auditfed.store.filters.FIELD_COLUMNS`.

Parsing is bounded (length, terms, nesting) so hostile input gets a clear
:class:`~auditfed.errors.InvalidInput`, never a crash; values reach SQL only as
bound parameters.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from auditfed.errors import InvalidInput
from auditfed.event.model import format_time, normalise_time
from auditfed.store.filters import FIELD_COLUMNS, And, Expr, Not, Or, Term

MAX_LENGTH = 4096
MAX_TERMS = 100
MAX_DEPTH = 16

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<lparen>\() | (?P<rparen>\)) |
        (?P<term>-?[A-Za-z_.]+(?::|>=|<=|>|<)(?:"(?:[^"\\]|\\.)*"|[^\s()"]+)) |
        (?P<word>[^\s()]+)
    )""",
    re.VERBOSE,
)
_TERM = re.compile(r"(?P<neg>-?)(?P<field>[A-Za-z_.]+)(?P<op>:|>=|<=|>|<)(?P<value>.*)", re.S)
_RELATIVE = re.compile(r"^now(?:-(?P<n>\d{1,6})(?P<unit>[smhd]))?$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
_ALIASES = {"environment": "env", "trace_id": "trace", "actor.id": "actor",
            "actor.principal": "principal", "resource.id": "resource",
            "source.service": "service"}


def parse_query(text: str, *, now: datetime | None = None) -> Expr | None:
    """Parse query text into a filter expression (``None`` for an empty query)."""
    if len(text) > MAX_LENGTH:
        raise InvalidInput(f"query longer than {MAX_LENGTH} characters")
    tokens = _tokenise(text)
    if not tokens:
        return None
    parser = _Parser(tokens, now or datetime.now(UTC))
    expr = parser.parse_or(0)
    if parser.pos != len(tokens):
        raise InvalidInput(f"unexpected {tokens[parser.pos][1]!r} in query")
    return expr


def _tokenise(text: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        match = _TOKEN.match(text, pos)
        if not match or match.end() == pos:
            raise InvalidInput(f"cannot read the query at position {pos}")
        kind = match.lastgroup or ""
        tokens.append((kind, match.group(kind)))
        pos = match.end()
    if sum(1 for kind, _ in tokens if kind == "term") > MAX_TERMS:
        raise InvalidInput(f"a query may have at most {MAX_TERMS} terms")
    return tokens


class _Parser:
    def __init__(self, tokens: list[tuple[str, str]], now: datetime) -> None:
        self.tokens = tokens
        self.pos = 0
        self.now = now

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def parse_or(self, depth: int) -> Expr:
        if depth > MAX_DEPTH:
            raise InvalidInput(f"query nested deeper than {MAX_DEPTH} levels")
        items = [self.parse_and(depth)]
        while (tok := self.peek()) and tok == ("word", "OR"):
            self.pos += 1
            items.append(self.parse_and(depth))
        return items[0] if len(items) == 1 else Or(tuple(items))

    def parse_and(self, depth: int) -> Expr:
        items = [self.parse_unary(depth)]
        while (tok := self.peek()) and tok[0] != "rparen" and tok != ("word", "OR"):
            if tok == ("word", "AND"):
                self.pos += 1
            items.append(self.parse_unary(depth))
        return items[0] if len(items) == 1 else And(tuple(items))

    def parse_unary(self, depth: int) -> Expr:
        tok = self.peek()
        if tok is None:
            raise InvalidInput("query ends where a term was expected")
        kind, text = tok
        self.pos += 1
        if (kind, text) == ("word", "NOT"):
            if depth >= MAX_DEPTH:
                raise InvalidInput(f"query nested deeper than {MAX_DEPTH} levels")
            return Not(self.parse_unary(depth + 1))
        if kind == "lparen":
            inner = self.parse_or(depth + 1)
            if self.peek() is None or self.peek()[0] != "rparen":  # type: ignore[index]
                raise InvalidInput("unbalanced parenthesis in query")
            self.pos += 1
            return inner
        if kind == "term":
            return self.term(text)
        if kind == "rparen":
            raise InvalidInput("unbalanced parenthesis in query")
        raise InvalidInput(
            f"{text!r} is not a term: write field:value (fields: {', '.join(FIELD_COLUMNS)})"
        )

    def term(self, text: str) -> Expr:
        match = _TERM.fullmatch(text)
        assert match is not None  # the tokeniser only yields well-formed terms
        field = _ALIASES.get(match["field"], match["field"])
        if field not in FIELD_COLUMNS:
            raise InvalidInput(f"unknown field {match['field']!r} (fields: {', '.join(FIELD_COLUMNS)})")
        value = _unquote(match["value"])
        op = "=" if match["op"] == ":" else match["op"]
        if field == "time":
            value = self.time_value(value)
        elif op != "=":
            raise InvalidInput(f"{field} takes field:value, comparisons are for time only")
        term = Term(field, value, op)  # type: ignore[arg-type]
        return Not(term) if match["neg"] else term

    def time_value(self, value: str) -> str:
        relative = _RELATIVE.match(value)
        if relative:
            offset = timedelta(**{_UNITS[relative["unit"]]: int(relative["n"])}) if relative["n"] else timedelta()
            try:
                return format_time(self.now - offset)
            except OverflowError:
                raise InvalidInput(f"{value!r} is before the year 1: use a smaller offset") from None
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
            value += "T00:00:00Z"
        try:
            return normalise_time(value)
        except ValueError:
            raise InvalidInput(f"{value!r} is not a time: use RFC 3339, a date or now-1h") from None


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return re.sub(r"\\(.)", r"\1", value[1:-1])
    return value
