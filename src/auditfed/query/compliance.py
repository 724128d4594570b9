"""The regulator's questions: who accessed, who changed, was it enforced, which changes lack a reason.

Answers are built on a documented classification of ``action`` verbs
(docs/query-language.md, "Action classes"): dotted verbs from applications
(``db.query``, ``data.export``, ``config.update``), from PostgreSQL's pgaudit
(``db.read.select``, ``db.ddl.create_table``, ``db.role.grant``), Kubernetes audit
(``k8s.get.secrets``, ``k8s.patch.deployments``) and AWS CloudTrail
(``s3.GetObject``, ``iam.AttachUserPolicy``). Each class is a list of globs (``*``
is any run of characters), tried in order; the first class that matches wins, so a
verb is never counted both as an access and as a change.

- :func:`who_accessed` — reads, queries, lists, exports and downloads of one resource,
  by whom, when, from where, with what outcome (denied attempts included and marked);
- :func:`who_changed` — create / update / delete / grant / config changes of one
  resource, with who, when, from where and the stated reason;
- :func:`enforcement` — for each hop (span) of one trace: was an access-policy decision
  recorded, by which enforcer, and did anything proceed after a deny; verdict
  ``enforced``, ``gaps`` (hops without a decision) or ``violated``;
- :func:`unjustified_changes` — changes without a ``reason`` in a time range.

The ``*_from_rows`` functions are pure; the others read a store.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from auditfed.errors import InvalidInput, NotFound
from auditfed.event.model import normalise_time
from auditfed.query.reading import READ_BYTES, Row, checked_value, collect
from auditfed.query.traces import assemble_trace, event_summary, trace_rows
from auditfed.store.base import Store
from auditfed.store.filters import And, Expr, Or, Term

__all__ = [
    "ACCESS_CLASSES",
    "CHANGE_CLASSES",
    "access_expr",
    "change_expr",
    "classify_action",
    "enforcement",
    "enforcement_from_rows",
    "unjustified_changes",
    "who_accessed",
    "who_changed",
]

#: Reads of data, in order of precedence: class -> globs over ``action``.
ACCESS_CLASSES: dict[str, tuple[str, ...]] = {
    "export": ("data.export", "*.export", "*.export.*", "*.Export*", "*.download", "*.Download*",
               "*.dump"),
    "query": ("*.query", "*.select", "db.*.select", "db.read.*", "*.search", "*.Query", "*.Scan",
              "*.Select*", "*.ExecuteStatement", "*.StartQueryExecution"),
    "list": ("*.list", "k8s.list.*", "k8s.watch.*", "*.List*", "*.Describe*"),
    "read": ("*.read", "*.get", "*.view", "*.fetch", "*.access", "k8s.get.*", "*.Get*", "*.BatchGet*",
             "*.GetObject"),
}

_K8S_WRITES = ("create", "update", "patch", "delete", "deletecollection")

#: Changes, in order of precedence: class -> globs over ``action``.
CHANGE_CLASSES: dict[str, tuple[str, ...]] = {
    "grant": ("*.grant", "*.revoke", "*.assign", "*.unassign", "db.role.*", "*.role.*", "*.permission.*",
              "*.member.*", "*.Grant*", "*.Revoke*", "*.Attach*Policy", "*.Detach*Policy", "*.Put*Policy",
              "*.AddUserToGroup", "*.RemoveUserFromGroup", *(f"k8s.{verb}.{kind}" for verb in _K8S_WRITES
                                                           for kind in ("rolebindings", "clusterrolebindings",
                                                                        "roles", "clusterroles"))),
    "config": ("config.*", "*.config.*", "*.configure", "*.settings.*", "*.policy.*", "*.Configuration*",
               "*.Put*Configuration", "*.Update*Configuration", "*.Put*Settings",
               *(f"k8s.{verb}.configmaps" for verb in _K8S_WRITES)),
    "delete": ("*.delete", "*.remove", "*.drop", "*.truncate", "*.purge", "db.*.delete", "db.ddl.drop*",
               "k8s.delete.*", "k8s.deletecollection.*", "*.Delete*", "*.Remove*", "*.Terminate*"),
    "create": ("*.create", "*.insert", "*.add", "*.import", "db.*.insert", "db.*.copy", "db.ddl.create*",
               "k8s.create.*", "*.Create*", "*.Insert*", "*.Import*", "*.Run*", "*.Register*"),
    "update": ("*.update", "*.modify", "*.patch", "*.set", "*.rotate", "*.change", "*.rename", "*.enable",
               "*.disable", "*.write", "db.*.update", "db.write.*", "db.ddl.*", "k8s.update.*",
               "k8s.patch.*", "*.Update*", "*.Modify*", "*.Set*", "*.Put*", "*.Attach*", "*.Detach*",
               "*.Enable*", "*.Disable*", "*.Change*", "*.Reset*", "*.Restore*"),
}

MAX_ROWS = 10_000


@lru_cache(maxsize=65_536)
def classify_action(action: str) -> tuple[str, str] | None:
    """``("access", class)``, ``("change", class)`` or ``None`` for other verbs.

    Changes are tried first: ``db.ddl.create_table`` is a change, ``k8s.get.secrets``
    an access. Matching is case-sensitive (CloudTrail names are CamelCase).
    """
    for kind, classes in (("change", CHANGE_CLASSES), ("access", ACCESS_CLASSES)):
        for name, globs in classes.items():
            if any(_glob(g).fullmatch(action) for g in globs):
                return kind, name
    return None


@lru_cache(maxsize=512)
def _glob(pattern: str) -> re.Pattern[str]:
    return re.compile(fnmatch.translate(pattern))


def _class_expr(classes: dict[str, tuple[str, ...]]) -> Expr:
    return Or(tuple(Term("action", g) for globs in classes.values() for g in globs))


def access_expr() -> Expr:
    """Index filter for actions that may be accesses (confirmed by :func:`classify_action`)."""
    return _class_expr(ACCESS_CLASSES)


def change_expr() -> Expr:
    """Index filter for actions that may be changes (confirmed by :func:`classify_action`)."""
    return _class_expr(CHANGE_CLASSES)


def _where(event: dict[str, Any]) -> dict[str, Any]:
    actor = event.get("actor") or {}
    source = event.get("source") or {}
    where = {"ip": actor.get("ip"), "user_agent": actor.get("user_agent"), "service": source.get("service"),
             "environment": source.get("environment"), "host": source.get("host"), "region": source.get("region"),
             "node": source.get("node")}
    return {k: v for k, v in where.items() if v is not None}


def _answer_item(index: int, event: dict[str, Any], kind: str) -> dict[str, Any]:
    item = event_summary(index, event)
    item["class"] = kind
    item["where"] = _where(event)
    actor = event.get("actor") or {}
    item["who"] = actor.get("principal") or actor.get("id")
    if actor.get("session"):
        item["session"] = actor["session"]
    trace = event.get("trace")
    if trace:
        item["trace_id"] = trace.get("trace_id")
    return item


def answer_from_rows(resource: str, rows: Sequence[Row], kind: str, *, more: bool = False) -> dict[str, Any]:
    """Accesses (``kind="access"``) or changes of ``resource`` among ``rows``, newest first."""
    items = []
    for index, event in sorted(rows, key=lambda row: row[0], reverse=True):
        found = classify_action(event.get("action") or "")
        if found is None or found[0] != kind:
            continue
        item = _answer_item(index, event, found[1])
        if kind == "access":
            item["denied"] = event.get("outcome") == "denied" or (event.get("policy") or {}).get("decision") == "deny"
        else:
            item["justified"] = bool(event.get("reason"))
        items.append(item)
    who: dict[str, int] = {}
    for item in items:
        who[item["who"]] = who.get(item["who"], 0) + 1
    key = "accesses" if kind == "access" else "changes"
    answer: dict[str, Any] = {"resource": resource, "count": len(items), "more": more, key: items,
                              "by": [{"who": w, "count": n} for w, n in sorted(who.items(), key=lambda x: -x[1])]}
    if kind == "access":
        answer["denied"] = sum(1 for i in items if i["denied"])
    else:
        answer["without_reason"] = sum(1 for i in items if not i["justified"])
    return answer


def _resource_answer(store: Store, resource: str, kind: str, limit: int, scope: Expr | None,
                     max_bytes: int) -> dict[str, Any]:
    checked_value("resource", resource, wildcard=True)
    expr = And((Term("resource", resource), access_expr() if kind == "access" else change_expr()))
    rows, more = collect(store, expr, limit=limit, keep=lambda e: (classify_action(e.get("action") or "")
                                                                   or ("",))[0] == kind, scope=scope,
                         max_bytes=max_bytes)
    return answer_from_rows(resource, rows, kind, more=more)


def who_accessed(store: Store, resource: str, *, limit: int = 1000, scope: Expr | None = None,
                 max_bytes: int = READ_BYTES) -> dict[str, Any]:
    """When was ``resource`` read, queried, listed or exported, and by whom (newest first).

    ``*`` in ``resource`` is a wildcard (``billing.*``)."""
    return _resource_answer(store, resource, "access", _bounded(limit), scope, max_bytes)


def who_changed(store: Store, resource: str, *, limit: int = 1000, scope: Expr | None = None,
                max_bytes: int = READ_BYTES) -> dict[str, Any]:
    """Every create / update / delete / grant / config change of ``resource`` (newest first)."""
    return _resource_answer(store, resource, "change", _bounded(limit), scope, max_bytes)


def unjustified_changes(
    store: Store, *, since: str | None = None, until: str | None = None, limit: int = 1000,
    scope: Expr | None = None, max_bytes: int = READ_BYTES,
) -> dict[str, Any]:
    """Changes with no stated ``reason`` with ``since <= time < until`` (newest first)."""
    terms: list[Expr] = [change_expr()]
    since, until = _time(since), _time(until)
    if since:
        terms.append(Term("time", since, ">="))
    if until:
        terms.append(Term("time", until, "<"))

    def keep(event: dict[str, Any]) -> bool:
        found = classify_action(event.get("action") or "")
        return found is not None and found[0] == "change" and not event.get("reason")

    rows, more = collect(store, And(tuple(terms)), limit=_bounded(limit), keep=keep, scope=scope, max_bytes=max_bytes)
    items = [_answer_item(index, event, classify_action(event["action"])[1])  # type: ignore[index]
             for index, event in rows]
    return {"since": since, "until": until, "count": len(items), "more": more, "changes": items}


def _time(value: str | None) -> str | None:
    """An RFC 3339 bound in the stored form (fixed width, UTC), so strings compare as times."""
    if not value:
        return None
    try:
        return normalise_time(value)
    except ValueError:
        raise InvalidInput(f"{value[:64]!r} is not an RFC 3339 time") from None


def _bounded(limit: int) -> int:
    if not 1 <= limit <= MAX_ROWS:
        raise InvalidInput(f"limit must be between 1 and {MAX_ROWS}")
    return limit


# --- enforcement ---------------------------------------------------------------------------

_DENIED = {"denied"}
_PROCEEDED = {"success"}


def enforcement_from_rows(trace_id: str, rows: Sequence[Row]) -> dict[str, Any]:
    """Per hop of the trace: the recorded policy decision, its enforcer, and the verdict.

    A *hop* is a span (events sharing ``trace.span_id``; an event without a span id is
    a hop of its own). A hop has a decision when any of its events carries ``policy``.
    *Violated*: an event succeeded although a policy decision in its own hop denied it,
    or an event succeeded after (in time) a deny in an ancestor hop — the request went
    on past a deny (without span links: after a deny anywhere in the trace).
    Otherwise *gaps* when a hop has no decision, else *enforced*.
    """
    trace = assemble_trace(trace_id, rows)
    if not trace["events"]:
        raise NotFound(f"no events with trace id {trace_id}")
    hops: list[dict[str, Any]] = []
    by_span: dict[str | None, dict[str, Any]] = {}
    parent_of: dict[str, str | None] = {}
    for node in _walk(trace["tree"]):
        decisions = [
            {"decision": e["policy"].get("decision"), "rule": e["policy"].get("rule"),
             "enforcer": e["policy"].get("enforcer"), "index": e["index"], "time": e["time"]}
            for e in node["events"] if e.get("policy")
        ]
        hop = {"span_id": node["span_id"], "parent_span_id": node["parent_span_id"], "service": node["service"],
               "depth": node["depth"], "events": [e["index"] for e in node["events"]],
               "actions": sorted({e["action"] for e in node["events"]}),
               "decision": _overall(decisions), "enforcers": sorted({d["enforcer"] for d in decisions
                                                                     if d["enforcer"]}),
               "decisions": decisions, "missing_parent": node["missing_parent"], "status": "ok"}
        if not decisions:
            hop["status"] = "no decision"
        hops.append(hop)
        if node["span_id"]:
            by_span[node["span_id"]] = hop
            parent_of[node["span_id"]] = node["parent_span_id"]

    violations: list[dict[str, Any]] = []
    have_spans = any(step["span_id"] for step in trace["steps"])
    denies: list[tuple[str, str | None, int]] = []  # (time, span, index) of deny decisions
    for step in trace["steps"]:
        policy = step.get("policy") or {}
        succeeded = step["outcome"] in _PROCEEDED
        if policy.get("decision") == "deny" and succeeded:
            violations.append({"index": step["index"], "service": step["service"], "action": step["action"],
                               "reason": "succeeded although its own policy decision was deny",
                               "deny_index": step["index"]})
        elif succeeded:
            for deny_time, deny_span, deny_index in denies:
                if deny_time > (step["time"] or ""):
                    continue
                related = (not have_spans or deny_span is None
                           or _descends(step["span_id"], deny_span, parent_of))
                if related:
                    violations.append({"index": step["index"], "service": step["service"],
                                       "action": step["action"], "deny_index": deny_index,
                                       "reason": "proceeded after a deny"})
                    break
        if policy.get("decision") == "deny":
            denies.append((step["time"] or "", step["span_id"], step["index"]))
    for violation in violations:
        hop = by_span.get(next((s["span_id"] for s in trace["steps"] if s["index"] == violation["index"]), None))
        if hop is not None:
            hop["status"] = "violated"

    gaps = [hop for hop in hops if not hop["decisions"]]
    verdict = "violated" if violations else "gaps" if gaps else "enforced"
    return {"trace_id": trace_id, "verdict": verdict, "hops": hops, "violations": violations,
            "gaps": [{"span_id": h["span_id"], "service": h["service"], "events": h["events"]} for h in gaps],
            "missing_links": trace["missing_links"], "events": trace["events"]}


def _overall(decisions: list[dict[str, Any]]) -> str | None:
    if not decisions:
        return None
    return "deny" if any(d["decision"] == "deny" for d in decisions) else "allow"


def _descends(span: str | None, ancestor: str, parent_of: dict[str, str | None]) -> bool:
    """Whether ``span`` is ``ancestor`` or below it in the parent links."""
    seen: set[str] = set()
    while span and span not in seen:
        if span == ancestor:
            return True
        seen.add(span)
        span = parent_of.get(span)
    return False


def _walk(roots: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    stack = list(reversed(roots))
    while stack:
        node = stack.pop()
        out.append(node)
        stack.extend(reversed(node["children"]))
    return out


def enforcement(store: Store, trace_id: str, *, scope: Expr | None = None,
                max_bytes: int = READ_BYTES) -> dict[str, Any]:
    """The enforcement verdict of one trace (see :func:`enforcement_from_rows`)."""
    return enforcement_from_rows(trace_id, trace_rows(store, trace_id, scope=scope, max_bytes=max_bytes)[0])
