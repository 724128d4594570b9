"""Principal timelines: everything one person or workload did, across every source.

A principal (``alice@corp.example``) is named differently by every system: GitHub
``alice``, Kubernetes ``oidc:alice@corp.example``, PostgreSQL ``alice_rw``. An event
belongs to the principal's timeline when

- its ``actor.principal`` is the principal (set at ingest by identity resolution), or
- its ``actor.id`` is one of the principal's aliases in the directory
  (:meth:`auditfed.identity.directory.Directory.aliases`), or matches one of the
  directory's rules that produce the principal (:meth:`~Directory.alias_patterns`) —
  so events stored before a link was added are found too. An alias is
  ``<system>:<actor id>``; an event matched through an alias is kept only when the
  directory, asked about the event's own source system, resolves its actor to this
  principal (``github:alice`` must not pull in some other system's ``alice``).

:func:`build_timeline` is pure (rows in, answer out); :func:`principal_timeline`
reads the store. The timeline is newest first (the last ``limit`` events by log
index, shown in event-time order), with

- ``idle_before_s`` on an event that follows a gap longer than ``gap_seconds``
  (default one hour) and a ``gaps`` list;
- ``switched_from`` on an event whose source (service / environment) differs from
  the event before it, and a ``sources`` summary.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from auditfed.defaults import DEFAULT_GAP_SECONDS
from auditfed.identity.directory import Directory
from auditfed.query.reading import READ_BYTES, Row, checked_value, collect
from auditfed.query.traces import event_summary, parse_time
from auditfed.store.base import Store
from auditfed.store.filters import Expr, Or, Term

__all__ = ["DEFAULT_GAP_SECONDS", "build_timeline", "principal_expr", "principal_matcher", "principal_timeline"]

MAX_ALIASES = 200


def _aliases(principal: str, directory: Directory | None) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    if directory is None:
        return [], []
    return directory.aliases(principal)[:MAX_ALIASES], directory.alias_patterns(principal)[:MAX_ALIASES]


def principal_expr(principal: str, directory: Directory | None = None) -> Expr:
    """Index filter for candidate events of ``principal`` (a superset; see the matcher)."""
    checked_value("principal", principal)
    terms: list[Expr] = [Term("actor", principal)]  # actor id or actor.principal
    seen = {principal}
    exact, patterns = _aliases(principal, directory)
    for _system, actor_id in exact:
        if actor_id not in seen and "*" not in actor_id:
            seen.add(actor_id)
            terms.append(Term("actor", actor_id))
    for _system, glob in patterns:
        if glob not in seen and glob.strip("*"):
            seen.add(glob)
            terms.append(Term("actor", glob))
    return terms[0] if len(terms) == 1 else Or(tuple(terms))


def principal_matcher(principal: str, directory: Directory | None = None) -> Any:
    """``match(event) -> str | None``: how an event belongs to the principal, if it does."""

    def match(event: dict[str, Any]) -> str | None:
        actor = event.get("actor") or {}
        if actor.get("principal") == principal:
            return "principal"
        actor_id = actor.get("id")
        if actor_id == principal:
            return "actor"
        if directory is None or not actor_id:
            return None
        source = event.get("source") or {}
        system = directory.system_for(source.get("kind") or "app", source.get("service"))
        if directory.resolve(system, actor_id) == principal:
            return f"{system}:{actor_id}"
        return None

    return match


def build_timeline(
    principal: str,
    rows: Sequence[Row],
    *,
    directory: Directory | None = None,
    gap_seconds: float = DEFAULT_GAP_SECONDS,
    limit: int | None = None,
    more: bool = False,
) -> dict[str, Any]:
    """The timeline of ``principal`` from candidate rows (filtered, newest first)."""
    match = principal_matcher(principal, directory)
    kept: list[tuple[int, dict[str, Any], str]] = []
    for index, event in sorted(rows, key=lambda row: row[0], reverse=True):
        how = match(event)
        if how is not None:
            kept.append((index, event, how))
        if limit is not None and len(kept) == limit:
            more = more or len(kept) < len(rows)
            break
    kept.sort(key=lambda item: (item[1].get("time") or "", item[0]), reverse=True)

    events: list[dict[str, Any]] = []
    gaps: list[dict[str, Any]] = []
    sources: dict[tuple[str | None, str | None], dict[str, Any]] = {}
    for position, (index, event, how) in enumerate(kept):
        item = event_summary(index, event)
        item["matched_by"] = how
        source = item["service"], item["environment"]
        part = sources.get(source)
        if part is None:
            part = sources[source] = {"service": source[0], "environment": source[1], "events": 0,
                                      "first": item["time"], "last": item["time"]}
        part["events"] += 1
        part["first"] = item["time"]  # walking newest to oldest
        if position + 1 < len(kept):
            older_index, older, _ = kept[position + 1]
            older_source = (older.get("source") or {}).get("service"), (older.get("source") or {}).get("environment")
            if older_source != source:
                item["switched_from"] = {"service": older_source[0], "environment": older_source[1]}
            newer_time, older_time = parse_time(item["time"]), parse_time(older.get("time"))
            if newer_time and older_time:
                idle = (newer_time - older_time).total_seconds()
                if idle > gap_seconds:
                    item["idle_before_s"] = round(idle, 3)
                    gaps.append({"from": older.get("time"), "to": item["time"], "idle_s": round(idle, 3),
                                 "after_index": older_index, "before_index": index})
        events.append(item)

    exact, patterns = _aliases(principal, directory)
    return {
        "principal": principal,
        "aliases": [f"{system}:{actor_id}" for system, actor_id in exact],
        "alias_patterns": [f"{system}:{glob}" for system, glob in patterns],
        "count": len(events),
        "more": more,
        "gap_seconds": gap_seconds,
        "events": events,
        "gaps": gaps,
        "source_switches": sum(1 for e in events if "switched_from" in e),
        "sources": sorted(sources.values(), key=lambda s: -s["events"]),
    }


def principal_timeline(
    store: Store,
    principal: str,
    *,
    directory: Directory | None = None,
    limit: int = 100,
    gap_seconds: float = DEFAULT_GAP_SECONDS,
    scope: Expr | None = None,
    max_bytes: int = READ_BYTES,
) -> dict[str, Any]:
    """The last ``limit`` events of ``principal`` (aliases expanded), newest first."""
    match = principal_matcher(principal, directory)
    rows, more = collect(store, principal_expr(principal, directory), limit=limit,
                         keep=lambda event: match(event) is not None, scope=scope, max_bytes=max_bytes)
    return build_timeline(principal, rows, directory=directory, gap_seconds=gap_seconds, more=more)
