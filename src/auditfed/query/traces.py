"""Trace assembly: one request followed across every service it touched (W3C trace context).

Events that share a ``trace.trace_id`` are one trace. Within it, ``trace.span_id`` and
``trace.parent_span_id`` (W3C ``traceparent`` parent links) arrange them as a tree:
every span is a node, its children are the spans that name it as their parent.

What :func:`assemble_trace` reports, from a list of ``(log index, event)`` pairs:

- ``steps``: every event in the order things happened — event ``time``, then log index
  (the order of arrival never matters: producers deliver late and out of order); each
  step has its offset from the start of the trace and the time since the previous step,
  and ``late`` when it reached the log after an event that happened later;
- ``tree``: spans as a tree; a span whose parent is not in the trace is a root with
  ``missing_parent`` set (a *missing link*: a hop that logged nothing, or logged
  without trace context); events without a span id are roots of their own;
- ``services``: each service's part — events, first/last time, time spent;
- ``missing_links``: the parent span ids that are referred to but absent.

All functions are pure: they take rows already read from the store.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from auditfed.errors import InvalidInput, NotFound
from auditfed.query.reading import READ_BYTES, collect, exact_term
from auditfed.store.base import Store
from auditfed.store.filters import Expr

MAX_DEPTH = 100
"""Deepest span nesting kept in one tree."""

MAX_TRACE_EVENTS = 10_000
"""Most events read for one trace."""
_TRACE_ID = re.compile(r"[0-9A-Za-z_.:-]{1,128}")

__all__ = ["assemble_trace", "event_summary", "get_trace", "millis_between", "parse_time", "time_order", "trace_rows"]

Row = tuple[int, dict[str, Any]]


def parse_time(value: str | None) -> datetime | None:
    """An event's RFC 3339 ``time`` as an aware datetime (``None`` if absent or bad)."""
    if not value:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def millis_between(earlier: str | None, later: str | None) -> float | None:
    a, b = parse_time(earlier), parse_time(later)
    if a is None or b is None:
        return None
    return round((b - a).total_seconds() * 1000, 3)


def time_order(rows: Iterable[Row]) -> list[Row]:
    """Rows in the order things happened: event time, then log index."""
    return sorted(rows, key=lambda row: (row[1].get("time") or "", row[0]))


def event_summary(index: int, event: dict[str, Any]) -> dict[str, Any]:
    """The fields people look at first, flattened (used by every answer)."""
    actor = event.get("actor") or {}
    resource = event.get("resource") or {}
    source = event.get("source") or {}
    policy = event.get("policy")
    summary: dict[str, Any] = {
        "index": index,
        "time": event.get("time"),
        "action": event.get("action"),
        "outcome": event.get("outcome"),
        "actor": actor.get("id"),
        "principal": actor.get("principal"),
        "resource": resource.get("id"),
        "service": source.get("service"),
        "environment": source.get("environment"),
    }
    chain = actor.get("chain")
    if chain:
        summary["on_behalf_of"] = [link.get("principal") or link.get("id") for link in chain]
    if actor.get("claimed"):
        # shown apart and as said: the producer's claims, never the verified identity
        summary["claimed"] = actor["claimed"]
    if policy:
        summary["policy"] = policy
    if event.get("reason"):
        summary["reason"] = event["reason"]
    return summary


def assemble_trace(trace_id: str, rows: Sequence[Row]) -> dict[str, Any]:
    """Arrange the events of one trace (any order) as ordered steps and a span tree."""
    ordered = time_order((i, e) for i, e in rows if (e.get("trace") or {}).get("trace_id") == trace_id)
    if not ordered:
        return {"trace_id": trace_id, "events": 0, "steps": [], "tree": [], "services": [],
                "missing_links": [], "late_arrivals": 0}
    start, end = ordered[0][1].get("time"), ordered[-1][1].get("time")

    # Late arrival: a later log index than some event that happened after it.
    late = [False] * len(ordered)
    lowest_after = None
    for position in range(len(ordered) - 1, -1, -1):
        index = ordered[position][0]
        if lowest_after is not None and index > lowest_after:
            late[position] = True
        lowest_after = index if lowest_after is None else min(lowest_after, index)

    steps: list[dict[str, Any]] = []
    previous: str | None = None
    for position, (index, event) in enumerate(ordered):
        trace = event.get("trace") or {}
        step = event_summary(index, event)
        step["span_id"] = trace.get("span_id")
        step["parent_span_id"] = trace.get("parent_span_id")
        step["offset_ms"] = millis_between(start, event.get("time"))
        step["since_previous_ms"] = None if previous is None else millis_between(previous, event.get("time"))
        step["late"] = late[position]
        previous = event.get("time")
        steps.append(step)

    tree, missing = _span_tree(steps)
    return {
        "trace_id": trace_id,
        "events": len(steps),
        "start": start,
        "end": end,
        "duration_ms": millis_between(start, end),
        "services": _service_parts(steps),
        "steps": steps,
        "tree": tree,
        "missing_links": missing,
        "late_arrivals": sum(late),
        "complete": not missing,
    }


def _service_parts(steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    parts: dict[str, dict[str, Any]] = {}
    for step in steps:
        service = step["service"] or "?"
        part = parts.get(service)
        if part is None:
            part = parts[service] = {"service": service, "events": 0, "first": step["time"],
                                     "indexes": [], "actions": []}
        part["events"] += 1
        part["last"] = step["time"]
        part["indexes"].append(step["index"])
        if step["action"] not in part["actions"]:
            part["actions"].append(step["action"])
    for part in parts.values():
        part["duration_ms"] = millis_between(part["first"], part["last"])
    return list(parts.values())


def _span_tree(steps: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Spans as nested nodes (children in time order) and the missing parent links."""
    nodes: dict[str, dict[str, Any]] = {}
    order: list[dict[str, Any]] = []
    for step in steps:  # already in time order, so nodes are created in time order
        span = step["span_id"]
        node = nodes.get(span) if span else None
        if node is None:
            node = {"span_id": span, "parent_span_id": step["parent_span_id"], "service": step["service"],
                    "start": step["time"], "end": step["time"], "events": [], "children": [],
                    "missing_parent": False}
            order.append(node)
            if span:
                nodes[span] = node
        if node["parent_span_id"] is None and step["parent_span_id"]:
            node["parent_span_id"] = step["parent_span_id"]
        node["end"] = step["time"]
        node["events"].append(step)

    roots: list[dict[str, Any]] = []
    missing: list[dict[str, Any]] = []
    for node in order:
        parent_id = node["parent_span_id"]
        parent = nodes.get(parent_id) if parent_id else None
        if parent is not None and not _is_ancestor(node, parent, nodes):
            parent["children"].append(node)
            continue
        if parent_id:
            node["missing_parent"] = parent is None
            if parent is not None:
                node["cycle"] = True
            first = node["events"][0]
            missing.append({"span_id": node["span_id"], "parent_span_id": parent_id,
                            "reason": "cycle" if parent is not None else "parent span not in the trace",
                            "service": node["service"], "index": first["index"], "time": first["time"]})
        roots.append(node)
    for node in order:
        node["children"].sort(key=lambda child: (child["start"] or "", child["events"][0]["index"]))
    roots = _layout(roots)
    return roots, missing


def _is_ancestor(node: dict[str, Any], candidate: dict[str, Any], nodes: dict[str, dict[str, Any]]) -> bool:
    """Whether ``node`` is an ancestor of ``candidate`` (a cycle in the parent links)."""
    seen: set[str] = set()
    current: dict[str, Any] | None = candidate
    while current is not None:
        if current is node:
            return True
        if current.get("cycle"):  # its parent link was already cut
            return False
        parent_id = current["parent_span_id"]
        if not parent_id or parent_id in seen:
            return False
        seen.add(parent_id)
        current = nodes.get(parent_id)
    return False


def _layout(roots: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Depth, offset from the parent and duration (to the last descendant) of every span.

    Iterative (traces can be long chains); a subtree deeper than :data:`MAX_DEPTH` is cut
    off and listed as a root of its own with ``cut_at_depth`` set, so that the tree stays
    printable and serialisable.
    """
    result: list[dict[str, Any]] = []
    pending = list(roots)
    while pending:
        root = pending.pop(0)
        result.append(root)
        root["depth"], root["after_parent_ms"] = 0, None
        post: list[dict[str, Any]] = []
        stack = [root]
        while stack:
            node = stack.pop()
            post.append(node)
            kept = []
            for child in node["children"]:
                if node["depth"] + 1 > MAX_DEPTH:
                    child["cut_at_depth"] = MAX_DEPTH
                    pending.append(child)
                    continue
                child["depth"] = node["depth"] + 1
                child["after_parent_ms"] = millis_between(node["start"], child["start"])
                kept.append(child)
                stack.append(child)
            node["children"] = kept
        for node in reversed(post):  # children before parents
            last = node["end"]
            for child in node["children"]:
                if child["last"] and (last is None or child["last"] > last):
                    last = child["last"]
            node["last"] = last
        for node in post:
            node["duration_ms"] = millis_between(node["start"], node.pop("last"))
    return result


def check_trace_id(trace_id: str) -> str:
    """A trace id from a caller: 1-128 of ``[0-9A-Za-z_.:-]`` (W3C ids are 32 hex digits)."""
    if not _TRACE_ID.fullmatch(trace_id):
        raise InvalidInput("a trace id is 1 to 128 letters, digits, '_', '.', ':' or '-' (W3C: 32 hex digits)")
    return trace_id


def trace_rows(
    store: Store, trace_id: str, *, limit: int = MAX_TRACE_EVENTS, scope: Expr | None = None,
    max_bytes: int = READ_BYTES,
) -> tuple[list[Row], bool]:
    """Every event of one trace (at most ``limit`` and ``max_bytes``, oldest logged
    first), in time order; and whether the trace has more."""
    rows, more = collect(store, exact_term("trace", check_trace_id(trace_id)), limit=limit, newest_first=False,
                         scope=scope, max_bytes=max_bytes)
    return time_order(rows), more


def get_trace(store: Store, trace_id: str, *, scope: Expr | None = None,
              max_bytes: int = READ_BYTES) -> dict[str, Any]:
    """The assembled trace (``more``: events past the limits were left out); :class:`NotFound`
    when no event carries ``trace_id``."""
    rows, more = trace_rows(store, trace_id, scope=scope, max_bytes=max_bytes)
    if not rows:
        raise NotFound(f"no events with trace id {trace_id}")
    return {**assemble_trace(trace_id, rows), "more": more}
