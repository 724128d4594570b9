"""Reading events for the answers: paged store searches, decoded, post-filtered.

The answers (traces, timelines, compliance, evidence) ask the store's query index
(:meth:`auditfed.store.base.Store.search`) with filter expressions built here from
values, never from text, so a value with quotes or SQL in it is only ever a bound
parameter. Some conditions the index cannot express (an event's ``reason``, a
directory resolution) are checked on the decoded events; :func:`collect` pages on
until enough events pass or a scan budget is spent.

Memory does not grow with the events' size: pages are cut at a byte budget
(:meth:`~auditfed.store.base.Store.search_within`) and :func:`collect` stops, with
``more``, once the events it keeps reach ``max_bytes`` (the ``max_response_bytes``
setting).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import orjson

from auditfed.errors import InvalidInput
from auditfed.store.base import Store
from auditfed.store.filters import And, Expr, Not, Or, Query, Term

__all__ = [
    "MAX_EXPR_DEPTH", "MAX_VALUE", "PAGE", "READ_BYTES", "checked_value", "collect", "exact_term", "expr_depth",
    "iter_matches", "parse_checked", "parse_time_bound", "scoped", "wait_indexed",
]

PAGE = 1000
MAX_PAGE = 10_001
#: Event bytes per store page and per answer unless the caller says (``max_response_bytes``).
READ_BYTES = 8 * 1024 * 1024
MAX_VALUE = 1024
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

Row = tuple[int, dict[str, Any]]


def checked_value(name: str, value: str, *, wildcard: bool = False) -> str:
    """A field value from a caller: bounded, printable; ``*`` only where allowed."""
    if not value or len(value) > MAX_VALUE:
        raise InvalidInput(f"{name} must be 1 to {MAX_VALUE} characters")
    if _CONTROL.search(value):
        raise InvalidInput(f"{name} must not contain control characters")
    if not wildcard and "*" in value:
        raise InvalidInput(f"{name} must not contain '*'")
    return value


def exact_term(field: str, value: str) -> Term:
    """A term matching ``value`` exactly (refuses ``*``, which would be a wildcard)."""
    return Term(field, checked_value(field, value))


def wait_indexed(node: object) -> None:
    """Read your writes: wait (briefly) until the query index covers the committed log."""
    sequencer = getattr(node, "sequencer", None)
    wait = getattr(sequencer, "wait_indexed", None)
    if wait is not None:
        wait()


def scoped(expr: Expr | None, scope: Expr | None) -> Expr | None:
    """``expr`` AND ``scope`` (either may be absent)."""
    if scope is None:
        return expr
    return scope if expr is None else And((scope, expr))


def iter_matches(
    store: Store, expr: Expr | None, *, newest_first: bool = True, page: int = PAGE,
    after: int | None = None, max_bytes: int = READ_BYTES,
) -> Iterator[tuple[int, bytes]]:
    """Every ``(index, data)`` matching ``expr``, page by page (at most ``page`` events
    and ``max_bytes`` of them, or one larger event, in memory at a time)."""
    cursor = after
    while True:
        rows, more = store.search_within(Query(expr, newest_first=newest_first, limit=page, after=cursor), max_bytes)
        yield from rows
        if not more:
            return
        cursor = rows[-1][0]
        del rows


def collect(
    store: Store,
    expr: Expr | None,
    *,
    limit: int,
    newest_first: bool = True,
    keep: Callable[[dict[str, Any]], bool] | None = None,
    max_scan: int = 200_000,
    scope: Expr | None = None,
    max_bytes: int = READ_BYTES,
) -> tuple[list[Row], bool]:
    """Up to ``limit`` decoded matches passing ``keep`` (and up to ``max_bytes`` of
    them, at least one); and whether more may exist.

    ``scope`` narrows every search (a scoped auditor's service / environment). At most
    ``max_scan`` index matches are examined (a post-filter that rejects almost
    everything must not turn one request into a scan of the whole log).
    """
    expr = scoped(expr, scope)
    out: list[Row] = []
    # one page answers the usual case (and whether there is more) in one query
    page = min(MAX_PAGE, limit + 1) if keep is None else min(MAX_PAGE, max(PAGE, limit + 1))
    matches = iter_matches(store, expr, newest_first=newest_first, page=page, max_bytes=max_bytes)
    kept_bytes = 0
    for scanned, (index, data) in enumerate(matches, start=1):
        event = orjson.loads(data)
        if keep is None or keep(event):
            kept_bytes += len(data)
            if len(out) == limit or (out and kept_bytes > max_bytes):
                return out, True
            out.append((index, event))
        if scanned >= max_scan:
            return out, True
    return out, False


def parse_time_bound(name: str, value: str | None) -> str | None:
    """A time bound written as in the query language (RFC 3339, a date, ``now-1h``)."""
    from auditfed.query.language import parse_query

    if value is None or value == "":
        return None
    if len(value) > 64:
        raise InvalidInput(f"{name} is too long to be a time")
    try:
        expr = parse_query(f"time>={value}")
    except InvalidInput:
        expr = None
    if not isinstance(expr, Term) or expr.field != "time":
        raise InvalidInput(f"{name} {value[:64]!r} is not a time: use RFC 3339, a date or now-1h")
    return expr.value


#: Deepest AND / OR / NOT nesting passed on to the store (SQLite's parser overflows
#: somewhere above 100 nested expressions; the language's own bound covers parentheses
#: but not a run of NOTs).
MAX_EXPR_DEPTH = 48


def parse_checked(text: str) -> Expr | None:
    """:func:`auditfed.query.language.parse_query`, with the nesting bounded and
    recursion errors turned into :class:`InvalidInput` (a clear 400, never a 500)."""
    from auditfed.query.language import parse_query

    try:
        expr = parse_query(text)
    except RecursionError:
        raise InvalidInput(f"query nested deeper than {MAX_EXPR_DEPTH} levels") from None
    if expr is not None and expr_depth(expr) > MAX_EXPR_DEPTH:
        raise InvalidInput(f"query nested deeper than {MAX_EXPR_DEPTH} levels")
    return expr


def expr_depth(expr: Expr) -> int:
    """Nesting depth of an expression (a term is 1), computed without recursion."""
    deepest = 0
    stack: list[tuple[Expr, int]] = [(expr, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        if isinstance(node, Not):
            stack.append((node.item, depth + 1))
        elif isinstance(node, And | Or):
            stack.extend((item, depth + 1) for item in node.items)
    return deepest
