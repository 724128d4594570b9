"""Okta System Log events -> auditfed events.

Spec: Okta System Log API, "LogEvent object"
(https://developer.okta.com/docs/reference/api/system-log/#logevent-object): ``uuid``,
``published``, ``eventType``, ``actor`` (``id``, ``type``, ``alternateId``,
``displayName``), ``client`` (``ipAddress``, ``userAgent.rawUserAgent``), ``outcome``
(``result``: SUCCESS, FAILURE, SKIPPED, ALLOW, DENY, CHALLENGE, UNKNOWN; ``reason``),
``target[]``, ``authenticationContext.externalSessionId``, ``transaction.id``. The API
answers with a JSON array; log streams and exports may be NDJSON.

Mapping: ``action`` = ``okta.<eventType>``; ``actor.id`` = ``actor.alternateId`` (else
``actor.id``); ``outcome`` from ``outcome.result`` (DENY -> ``denied`` with a deny
policy); ``resource`` from the first target; ``id`` = ``uuid``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from auditfed.sources.base import (
    Decoded,
    RecordProblem,
    action_part,
    decode_objects,
    first,
    prune,
    read_json_records,
    text,
)

KIND = "okta"
_OUTCOMES = {
    "SUCCESS": "success", "ALLOW": "success", "FAILURE": "failure", "DENY": "denied",
    "CHALLENGE": "unknown", "SKIPPED": "unknown", "UNKNOWN": "unknown",
}
_ACTOR_TYPES = {"User": "user", "SystemPrincipal": "system", "PublicClientApp": "service",
                "AppInstance": "service"}


def decode(
    body: bytes,
    content_type: str | None,
    headers: Mapping[str, str],
    options: Mapping[str, Any] | None = None,
) -> Decoded:
    records = read_json_records(body, what="Okta System Log events")
    return decode_objects(KIND, records, "an Okta System Log event", normalise)


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def normalise(record: Mapping[str, Any]) -> dict[str, Any]:
    event_type = text(record.get("eventType"))
    if not event_type:
        raise RecordProblem("Okta System Log event without eventType")
    src_actor = _obj(record.get("actor"))
    actor_id = first(text(src_actor.get("alternateId")), text(src_actor.get("id")))
    if not actor_id:
        raise RecordProblem("Okta System Log event without actor.alternateId or actor.id")
    actor: dict[str, Any] = {"id": actor_id}
    if text(src_actor.get("type")):
        actor["type"] = _ACTOR_TYPES.get(src_actor["type"], src_actor["type"].lower())
    client = _obj(record.get("client"))
    if text(client.get("ipAddress")):
        actor["ip"] = client["ipAddress"]
    agent = _obj(client.get("userAgent"))
    if text(agent.get("rawUserAgent")):
        actor["user_agent"] = agent["rawUserAgent"]
    auth = _obj(record.get("authenticationContext"))
    if text(auth.get("externalSessionId")):
        actor["session"] = auth["externalSessionId"]
    out = _obj(record.get("outcome"))
    result = text(out.get("result"))
    outcome = _OUTCOMES.get(result.upper(), "unknown") if result else "unknown"
    event: dict[str, Any] = {
        "action": f"okta.{action_part(event_type)}",
        "outcome": outcome,
        "actor": actor,
        "source": {"service": "okta", "kind": KIND},
        "original": dict(record),
    }
    if text(record.get("published")):
        event["time"] = record["published"]
    if text(record.get("uuid")):
        event["id"] = record["uuid"]
    transaction = _obj(record.get("transaction"))
    if text(transaction.get("id")):
        event["request_id"] = transaction["id"]
    targets = record.get("target")
    if isinstance(targets, list) and targets and isinstance(targets[0], dict):
        head = targets[0]
        rid = first(text(head.get("alternateId")), text(head.get("id")))
        if rid:
            event["resource"] = prune({
                "type": text(head.get("type")),
                "id": rid,
                "name": text(head.get("displayName")),
            })
    reason = text(out.get("reason"))
    if outcome == "denied":
        event["policy"] = prune({"decision": "deny", "enforcer": "okta", "reason": reason})
    attributes = prune({
        "okta.display_message": record.get("displayMessage"),
        "okta.severity": record.get("severity"),
        "okta.outcome_result": result,
        "okta.outcome_reason": reason,
        "okta.actor_display_name": src_actor.get("displayName"),
        "okta.actor_uid": src_actor.get("id"),
        "okta.targets": targets[1:] if isinstance(targets, list) and len(targets) > 1 else None,
        "okta.zone": client.get("zone"),
        "okta.credential_type": auth.get("credentialType"),
    })
    if attributes:
        event["attributes"] = attributes
    return event
