"""GitHub audit log (JSON / NDJSON export and audit log streaming) -> auditfed events.

Spec: GitHub Docs, "Reviewing the audit log for your organization" / "Exporting audit
log activity for your enterprise" and "Streaming the audit log for your enterprise"
(https://docs.github.com/en/enterprise-cloud@latest/admin/monitoring-activity-in-your-enterprise/reviewing-audit-logs-for-your-enterprise):
one JSON object per entry with ``action`` (``repo.create``), ``actor``, ``org``,
``repo``, ``user``, ``created_at`` / ``@timestamp`` in epoch milliseconds,
``_document_id``. Exports are a JSON array; streams write NDJSON.

Mapping: ``action`` = ``github.<action>``; ``actor.id`` = ``actor`` (login);
``resource`` = the repository, else the affected user, team or organisation;
``source.account`` = ``org`` (or ``business``); ``id`` = ``_document_id``.
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
    time_value,
)

KIND = "github-audit"
_FAILED_SUFFIXES = ("failed", "failure", "fail")
_DENIED_SUFFIXES = ("denied", "blocked", "rejected")


def decode(
    body: bytes,
    content_type: str | None,
    headers: Mapping[str, str],
    options: Mapping[str, Any] | None = None,
) -> Decoded:
    records = read_json_records(body, what="GitHub audit log entries")
    return decode_objects(KIND, records, "a GitHub audit log entry", normalise)


def normalise(record: Mapping[str, Any]) -> dict[str, Any]:
    action = text(record.get("action"))
    if not action:
        raise RecordProblem("GitHub audit log entry without action")
    actor_login = text(record.get("actor"))
    if not actor_login:
        raise RecordProblem("GitHub audit log entry without actor")
    when = time_value(first(record.get("@timestamp"), record.get("created_at"),
                            record.get("timestamp")))
    actor: dict[str, Any] = {
        "id": actor_login,
        "type": "bot" if actor_login.endswith("[bot]") else "user",
    }
    if text(record.get("actor_ip")):
        actor["ip"] = record["actor_ip"]
    if text(record.get("user_agent")):
        actor["user_agent"] = record["user_agent"]
    last = action.rsplit(".", 1)[-1].lower()
    if last.endswith(_DENIED_SUFFIXES):
        outcome = "denied"
    elif last.endswith(_FAILED_SUFFIXES):
        outcome = "failure"
    else:
        outcome = "success"
    org = text(record.get("org"))
    repo = text(record.get("repo")) or text(record.get("repository"))
    if repo:
        resource = {"type": "repository", "id": repo, "name": repo.rsplit("/", 1)[-1]}
    elif text(record.get("user")):
        resource = {"type": "user", "id": record["user"], "name": record["user"]}
    elif text(record.get("team")):
        resource = {"type": "team", "id": record["team"], "name": record["team"].rsplit("/", 1)[-1]}
    elif org:
        resource = {"type": "organization", "id": org, "name": org}
    else:
        resource = {}
    event: dict[str, Any] = {
        "action": f"github.{action_part(action)}",
        "outcome": outcome,
        "actor": actor,
        "source": prune({
            "service": "github",
            "kind": KIND,
            "account": org or text(record.get("business")),
        }),
        "original": dict(record),
    }
    if when:
        event["time"] = when
    if resource:
        event["resource"] = resource
    ident = text(record.get("_document_id"))
    if ident:
        event["id"] = ident
    if text(record.get("request_id")):
        event["request_id"] = record["request_id"]
    location = record.get("actor_location")
    attributes = prune({
        "github.org": org,
        "github.business": record.get("business"),
        "github.repo": repo,
        "github.user": record.get("user"),
        "github.operation_type": record.get("operation_type"),
        "github.actor_id": record.get("actor_id"),
        "github.country_code": location.get("country_code") if isinstance(location, dict) else None,
        "github.token_id": record.get("token_id"),
        "github.programmatic_access_type": record.get("programmatic_access_type"),
        "github.transport_protocol": record.get("transport_protocol_name"),
    })
    if attributes:
        event["attributes"] = attributes
    return event
