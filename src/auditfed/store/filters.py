"""Event filters the store can execute: a small expression tree and its SQL form.

The query language (:mod:`auditfed.query.language`) parses people's text into this
tree; engines compile it to a parameterised WHERE clause with
:func:`compile_where`. Values only ever travel as bound parameters.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from hashlib import blake2b
from typing import Literal

#: Query field -> the indexed column(s) it searches (several: any of them matches).
FIELD_COLUMNS: dict[str, tuple[str, ...]] = {
    "action": ("action",),
    "actor": ("actor", "principal"),
    "principal": ("principal",),
    "resource": ("resource",),
    "service": ("service",),
    "env": ("environment",),
    "outcome": ("outcome",),
    "trace": ("trace_id",),
    "id": ("event_id",),
    "time": ("time",),
}

Comparison = Literal["=", ">=", ">", "<=", "<"]


def index_key(value: str) -> int:
    """A 64-bit key for ``value`` (the first 8 bytes of its BLAKE2b hash).

    An index may keep this compact stand-in of a long random string (event ids,
    trace ids) instead of the string: its entries are several times smaller, so
    inserts touch and rewrite fewer pages. Two values may share a key, so a lookup
    by key is always confirmed on the value itself.
    """
    digest = blake2b(value.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


@dataclass(frozen=True, slots=True)
class Term:
    field: str
    value: str
    op: Comparison = "="


@dataclass(frozen=True, slots=True)
class And:
    items: tuple[Expr, ...]


@dataclass(frozen=True, slots=True)
class Or:
    items: tuple[Expr, ...]


@dataclass(frozen=True, slots=True)
class Not:
    item: Expr


Expr = Term | And | Or | Not


@dataclass(frozen=True, slots=True)
class Query:
    """A filter plus the page: ``after`` is the cursor (an index), exclusive."""

    expr: Expr | None = None
    newest_first: bool = True
    limit: int = 100
    after: int | None = None
    extra: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Dialect:
    placeholder: str
    wildcard_op: str  # GLOB (SQLite) or LIKE (PostgreSQL)
    #: Columns the index finds by their :func:`index_key` column instead of their value.
    keyed: Mapping[str, str] = field(default_factory=dict)

    def pattern(self, value: str) -> str:
        """Our ``*`` wildcard as this dialect's pattern, other specials escaped."""
        if self.wildcard_op == "GLOB":
            escaped = "".join(f"[{c}]" if c in "[]?" else c for c in value)
            return escaped
        escaped = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        return escaped.replace("*", "%")


SQLITE = Dialect("?", "GLOB", {"event_id": "id_key", "trace_id": "trace_key"})
POSTGRES = Dialect("%s", "LIKE")


def compile_where(expr: Expr | None, dialect: Dialect, table: str = "") -> tuple[str, list[object]]:
    """``(sql, params)`` for a WHERE clause over the index table (aliased ``table``)."""
    if expr is None:
        return "1=1", []
    params: list[object] = []
    prefix = f"{table}." if table else ""
    return _compile(expr, dialect, params, prefix), params


def _compile(expr: Expr, dialect: Dialect, params: list[object], prefix: str) -> str:
    if isinstance(expr, And):
        return "(" + " AND ".join(_compile(e, dialect, params, prefix) for e in expr.items) + ")"
    if isinstance(expr, Or):
        return "(" + " OR ".join(_compile(e, dialect, params, prefix) for e in expr.items) + ")"
    if isinstance(expr, Not):
        # IS NOT TRUE, not NOT: an event without the field (NULL) does match a negation.
        return f"({_compile(expr.item, dialect, params, prefix)} IS NOT TRUE)"
    return _compile_term(expr, dialect, params, prefix)


def _compile_term(term: Term, dialect: Dialect, params: list[object], prefix: str) -> str:
    wildcard = term.op == "=" and "*" in term.value
    parts = []
    for name in FIELD_COLUMNS[term.field]:
        column = prefix + name
        keyed = dialect.keyed.get(name)
        if keyed and term.op == "=" and not wildcard:
            # The key finds the candidates through the index, the value confirms them.
            parts.append(f"({prefix}{keyed} = {dialect.placeholder} AND {column} = {dialect.placeholder})")
            params += [index_key(term.value), term.value]
        elif wildcard:
            escape = "" if dialect.wildcard_op == "GLOB" else " ESCAPE '\\'"
            parts.append(f"{column} {dialect.wildcard_op} {dialect.placeholder}{escape}")
            params.append(dialect.pattern(term.value))
        else:
            parts.append(f"{column} {term.op} {dialect.placeholder}")
            params.append(term.value)
    return parts[0] if len(parts) == 1 else "(" + " OR ".join(parts) + ")"
