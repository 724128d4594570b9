"""Kubernetes audit events (``audit.k8s.io/v1`` and ``v1beta1``) -> auditfed events.

Spec: Kubernetes "Auditing" (https://kubernetes.io/docs/tasks/debug/debug-cluster/audit/)
and the ``audit.k8s.io/v1`` API reference (Event, EventList). Accepted bodies: one
``Event``, an ``EventList`` as the webhook backend posts it, a JSON array, and NDJSON as
the log backend writes it.

One auditfed event per ``auditID``, taken at its final stage: ``ResponseComplete`` or
``Panic``; for long-running requests (exec, attach, port-forward, proxy, watch, log
streams) ``ResponseStarted``, because the request may stay open for hours. Earlier
stages (``RequestReceived``, a non-final ``ResponseStarted``) are counted as skipped.
Since ``id`` = ``auditID``, a final stage that arrives in a later request is a duplicate
of the one already stored, never a second event.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from auditfed.sources.base import (
    Decoded,
    RecordError,
    RecordProblem,
    action_part,
    emit,
    first,
    prune,
    read_json_records,
    text,
)

KIND = "k8s-audit"
LONG_RUNNING_SUBRESOURCES = frozenset({"exec", "attach", "portforward", "proxy"})
FINAL_STAGES = frozenset({"ResponseComplete", "Panic"})
_STAGE_RANK = {"RequestReceived": 0, "ResponseStarted": 1, "ResponseComplete": 2, "Panic": 3}


def _unwrap(obj: dict[str, Any]) -> list[Any] | None:
    if obj.get("kind") == "EventList" or ("items" in obj and "auditID" not in obj):
        items = obj.get("items")
        if not isinstance(items, list):
            raise RecordProblem("EventList.items must be an array")
        return items
    return None


def is_long_running(record: Mapping[str, Any]) -> bool:
    ref = record.get("objectRef") or {}
    sub = text(ref.get("subresource")) if isinstance(ref, dict) else None  # hostile records: not only strings
    if sub in LONG_RUNNING_SUBRESOURCES:
        return True
    if record.get("verb") == "watch":
        return True
    uri = text(record.get("requestURI")) or ""
    if sub == "log" and "follow=true" in uri:
        return True
    return "watch=true" in uri or "watch=1" in uri


def decode(
    body: bytes,
    content_type: str | None,
    headers: Mapping[str, str],
    options: Mapping[str, Any] | None = None,
) -> Decoded:
    options = options or {}
    records = read_json_records(
        body, what="Kubernetes audit events", unwrap=_unwrap, wrapper_key="items"
    )
    decoded = Decoded(KIND)
    cluster = text(options.get("cluster")) or text(headers.get("x-auditfed-k8s-cluster"))
    # choose one record per auditID: its final stage
    chosen: dict[str, int] = {}
    for position, record in records:
        if isinstance(record, RecordError) or not isinstance(record, dict):
            continue
        audit_id = record.get("auditID")
        if not isinstance(audit_id, str) or not audit_id:
            continue
        if not _is_final(record):
            continue
        previous = chosen.get(audit_id)
        if previous is None or _better(record, records[previous][1]):
            chosen[audit_id] = position
    for position, record in records:
        if isinstance(record, RecordError):
            decoded.add(position, record)
            continue
        if not isinstance(record, dict):
            decoded.error(position, "a Kubernetes audit event must be a JSON object")
            continue
        audit_id = record.get("auditID")
        if isinstance(audit_id, str) and audit_id and chosen.get(audit_id) != position:
            decoded.skipped += 1  # an earlier stage, or a duplicate of the final one
            continue
        emit(decoded, position, lambda r=record: normalise(r, cluster=cluster))
    return decoded


def _stage(record: Mapping[str, Any]) -> str | None:
    """The record's stage; a stage that is not a string counts as none (its normaliser judges it)."""
    stage = record.get("stage")
    return stage if isinstance(stage, str) else None


def _is_final(record: Mapping[str, Any]) -> bool:
    stage = _stage(record)
    if stage is None or stage in FINAL_STAGES:
        return True
    return stage == "ResponseStarted" and is_long_running(record)


def _better(new: Mapping[str, Any], old: Mapping[str, Any]) -> bool:
    if is_long_running(new) and _stage(new) == "ResponseStarted":
        return _stage(old) not in ("ResponseStarted", "Panic")
    return _STAGE_RANK.get(_stage(new) or "", 2) > _STAGE_RANK.get(_stage(old) or "", 2)


def _user_type(username: str) -> str:
    if username.startswith("system:serviceaccount:"):
        return "service"
    if username.startswith("system:node:"):
        return "node"
    if username in ("system:anonymous", "system:unauthenticated"):
        return "anonymous"
    if username.startswith("system:"):
        return "system"
    return "user"


def normalise(record: Mapping[str, Any], *, cluster: str | None = None) -> dict[str, Any]:
    kind = record.get("kind")
    if kind not in (None, "Event"):
        raise RecordProblem(f"not a Kubernetes audit Event (kind {kind!r})")
    audit_id = text(record.get("auditID"))
    if not audit_id:
        raise RecordProblem("Kubernetes audit event without auditID")
    verb = text(record.get("verb"))
    if not verb:
        raise RecordProblem("Kubernetes audit event without verb")
    user = record.get("user")
    if not isinstance(user, dict) or not text(user.get("username")):
        raise RecordProblem("Kubernetes audit event without user.username")
    username = text(user["username"])
    assert username is not None

    actor: dict[str, Any] = {"id": username, "type": _user_type(username)}
    impersonated = record.get("impersonatedUser")
    if isinstance(impersonated, dict) and text(impersonated.get("username")):
        who = text(impersonated["username"])
        assert who is not None
        actor["chain"] = [{"id": who, "type": _user_type(who)}]
    ips = record.get("sourceIPs")
    if isinstance(ips, list) and ips and text(ips[0]):
        actor["ip"] = text(ips[0])
    if text(record.get("userAgent")):
        actor["user_agent"] = record["userAgent"]

    ref = record.get("objectRef") if isinstance(record.get("objectRef"), dict) else None
    resource: dict[str, Any] = {}
    if ref:
        res = text(ref.get("resource")) or "unknown"
        sub = text(ref.get("subresource"))
        action = f"k8s.{action_part(verb)}.{action_part(res)}"
        if sub:
            action += f".{action_part(sub)}"
        ns, name, group = text(ref.get("namespace")), text(ref.get("name")), text(ref.get("apiGroup"))
        parts = [group] if group else []
        if ns and res != "namespaces":
            parts += ["namespaces", ns]
        parts.append(res)
        if name:
            parts.append(name)
        resource = prune({
            "type": f"{res}/{sub}" if sub else res,
            "id": "/".join(parts),
            "name": name or ns,
        })
    else:
        action = f"k8s.{action_part(verb)}"
        if text(record.get("requestURI")):
            resource = {"type": "url", "id": record["requestURI"]}

    status = record.get("responseStatus") if isinstance(record.get("responseStatus"), dict) else {}
    code = status.get("code") if isinstance(status.get("code"), int) else None
    annotations = record.get("annotations") if isinstance(record.get("annotations"), dict) else {}
    decision = annotations.get("authorization.k8s.io/decision")
    reason = text(annotations.get("authorization.k8s.io/reason"))
    if code is None:
        outcome = "unknown"
    elif code < 400:
        outcome = "success"
    elif code in (401, 403):
        outcome = "denied"
    else:
        outcome = "failure"
    if decision == "forbid":
        outcome = "denied"

    event: dict[str, Any] = {
        "id": audit_id,
        "action": action,
        "outcome": outcome,
        "actor": actor,
        "source": {"service": cluster or "kubernetes", "kind": KIND},
        "request_id": audit_id,
        "original": dict(record),
    }
    if cluster:
        event["source"]["environment"] = cluster
    when = first(
        text(record.get("requestReceivedTimestamp")),
        text(record.get("stageTimestamp")),
        text(record.get("timestamp")),
    )
    if when:
        event["time"] = when
    if resource:
        event["resource"] = resource
    if decision in ("allow", "forbid"):
        policy: dict[str, Any] = {
            "decision": "allow" if decision == "allow" else "deny",
            "enforcer": "kube-apiserver",
        }
        if reason:
            policy["reason"] = reason
        event["policy"] = policy
    attributes = prune({
        "k8s.stage": record.get("stage"),
        "k8s.level": record.get("level"),
        "k8s.verb": verb,
        "k8s.request_uri": record.get("requestURI"),
        "k8s.namespace": ref.get("namespace") if ref else None,
        "k8s.api_group": ref.get("apiGroup") if ref else None,
        "k8s.api_version": ref.get("apiVersion") if ref else None,
        "k8s.response_code": code,
        "k8s.response_reason": status.get("reason"),
        "k8s.groups": user.get("groups"),
        "k8s.source_ips": record.get("sourceIPs"),
        "k8s.impersonated_groups": (
            impersonated.get("groups") if isinstance(impersonated, dict) else None
        ),
    })
    if attributes:
        event["attributes"] = attributes
    return event
