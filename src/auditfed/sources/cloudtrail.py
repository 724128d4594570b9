"""AWS CloudTrail records -> auditfed events.

Spec: AWS CloudTrail User Guide, "CloudTrail record contents" and "CloudTrail
userIdentity element" (https://docs.aws.amazon.com/awscloudtrail/latest/userguide/
cloudtrail-event-reference-record-contents.html). Accepted bodies: log files
``{"Records": [...]}`` (gunzipped by the caller), JSON arrays, single records, NDJSON.

Mapping: ``id`` = eventID; ``action`` = ``<service>.<eventName>`` where service is the
first label of eventSource (``iam.CreateAccessKey``); ``actor.id`` = the identity's ARN
(else principalId, else the invoking service); an assumed-role session's issuing role
and ``invokedBy`` go into the delegation chain; ``outcome`` from ``errorCode``
(AccessDenied-style codes -> ``denied``, others -> ``failure``); ``resource`` from
``resources[]`` or well-known request parameters; source IP, region and account into
``actor.ip`` and ``source``.
"""

from __future__ import annotations

import re
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

KIND = "cloudtrail"

DENIED_CODE = re.compile(
    r"AccessDenied|Unauthorized|Forbidden|NotAuthorized|AuthorizationError|AuthFailure|"
    r"InvalidClientTokenId|SignatureDoesNotMatch|ExpiredToken|MissingAuthenticationToken",
    re.IGNORECASE,
)

_IDENTITY_TYPES = {
    "IAMUser": "user",
    "Root": "root",
    "AssumedRole": "role",
    "Role": "role",
    "FederatedUser": "user",
    "SAMLUser": "user",
    "WebIdentityUser": "user",
    "IdentityCenterUser": "user",
    "Directory": "user",
    "AWSService": "service",
    "AWSAccount": "account",
    "Unknown": "unknown",
}

# request parameters that name the resource acted upon, most specific first
_PARAM_RESOURCES: tuple[tuple[str, str], ...] = (
    ("userName", "user"),
    ("roleName", "role"),
    ("groupName", "group"),
    ("policyArn", "policy"),
    ("secretId", "secret"),
    ("functionName", "function"),
    ("bucketName", "bucket"),
    ("trailName", "trail"),
    ("instanceId", "instance"),
    ("instanceIds", "instance"),
    ("instancesSet", "instance"),
    ("snapshotId", "snapshot"),
    ("dBSnapshotIdentifier", "db-snapshot"),
    ("imageId", "image"),
    ("groupId", "security-group"),
    ("keyId", "key"),
    ("modelId", "model"),
    ("documentName", "document"),
    ("resolverQueryLogConfigId", "resolver-query-log-config"),
    ("roleArn", "role"),
    ("target", "target"),
    ("sessionId", "session"),
    ("commandId", "command"),
    ("name", "name"),
    ("names", "name"),
)


def _unwrap(obj: dict[str, Any]) -> list[Any] | None:
    if "Records" in obj:
        records = obj["Records"]
        if not isinstance(records, list):
            raise RecordProblem("Records must be an array")
        return records
    return None


def decode(
    body: bytes,
    content_type: str | None,
    headers: Mapping[str, str],
    options: Mapping[str, Any] | None = None,
) -> Decoded:
    records = read_json_records(
        body, what="CloudTrail records", unwrap=_unwrap, wrapper_key="Records"
    )
    return decode_objects(KIND, records, "a CloudTrail record", normalise)


_IP_LIKE = re.compile(r"\d{1,3}(?:\.\d{1,3}){3}|[0-9A-Fa-f]*:[0-9A-Fa-f:.]*(?:%\w+)?")


def _is_ip(value: str) -> bool:
    """An IPv4/IPv6 address (anonymised ones with leading zeros too), not a service name."""
    return _IP_LIKE.fullmatch(value) is not None


def _param_resource(service: str, params: Any) -> dict[str, Any] | None:
    if not isinstance(params, dict):
        return None
    for key, kind in _PARAM_RESOURCES:
        if key not in params:
            continue
        value = params[key]
        if key == "instancesSet" and isinstance(value, dict):
            items = value.get("items")
            head = items[0] if isinstance(items, list) and items else None
            value = head.get("instanceId") if isinstance(head, dict) else None
        elif isinstance(value, list):
            value = value[0] if value and isinstance(value[0], str) else None
        value = text(value)
        if value:
            return {"type": f"{service}.{kind}", "id": value, "name": _short_name(value)}
    return None


def _short_name(value: str) -> str:
    if value.startswith("arn:"):
        return re.split(r"[:/]", value)[-1] or value
    return value


def normalise(record: Mapping[str, Any]) -> dict[str, Any]:
    event_name = text(record.get("eventName"))
    event_source = text(record.get("eventSource"))
    event_time = text(record.get("eventTime"))
    identity = record.get("userIdentity")
    if not event_name:
        raise RecordProblem("CloudTrail record without eventName")
    if not event_source:
        raise RecordProblem("CloudTrail record without eventSource")
    if not event_time:
        raise RecordProblem("CloudTrail record without eventTime")
    if not isinstance(identity, dict):
        raise RecordProblem("CloudTrail record without userIdentity object")
    service = action_part(event_source.split(".", 1)[0])

    invoked_by = text(identity.get("invokedBy"))
    actor_id = first(
        text(identity.get("arn")),
        text(identity.get("principalId")),
        invoked_by,
        text(identity.get("accountId")),
    )
    if not actor_id:
        raise RecordProblem("CloudTrail userIdentity has no arn, principalId or invokedBy")
    id_type = identity.get("type")
    actor: dict[str, Any] = {"id": actor_id, "type": _IDENTITY_TYPES.get(id_type, "unknown")}
    chain: list[dict[str, str]] = []
    session_ctx = identity.get("sessionContext") if isinstance(identity.get("sessionContext"), dict) else {}
    issuer = session_ctx.get("sessionIssuer") if isinstance(session_ctx.get("sessionIssuer"), dict) else {}
    issuer_arn = text(issuer.get("arn"))
    if issuer_arn and issuer_arn != actor_id:
        chain.append({"id": issuer_arn, "type": "role" if issuer.get("type") == "Role" else "user"})
    if invoked_by and invoked_by != actor_id:
        chain.append({"id": invoked_by, "type": "service"})
    if chain:
        actor["chain"] = chain
    if text(identity.get("accessKeyId")):
        actor["session"] = identity["accessKeyId"]
    source_ip = text(record.get("sourceIPAddress"))
    ip_like = bool(source_ip) and _is_ip(source_ip)  # else a service name, "AWS Internal"
    if ip_like:
        actor["ip"] = source_ip
    if text(record.get("userAgent")):
        actor["user_agent"] = record["userAgent"]

    error_code = text(record.get("errorCode"))
    error_message = text(record.get("errorMessage"))
    response = record.get("responseElements")
    if error_code:
        outcome = "denied" if DENIED_CODE.search(error_code) else "failure"
    elif isinstance(response, dict) and response.get("ConsoleLogin") == "Failure":
        outcome = "failure"
    else:
        outcome = "success"

    account = first(text(record.get("recipientAccountId")), text(identity.get("accountId")))
    source = prune({
        "service": f"aws.{service}",
        "kind": KIND,
        "region": text(record.get("awsRegion")),
        "account": account,
    })
    event: dict[str, Any] = {
        "action": f"{service}.{action_part(event_name)}",
        "time": event_time,
        "outcome": outcome,
        "actor": actor,
        "source": source,
        "original": dict(record),
    }
    if text(record.get("eventID")):
        event["id"] = record["eventID"]
    if text(record.get("requestID")):
        event["request_id"] = record["requestID"]

    resource = None
    extra_resources = None
    resources = record.get("resources")
    if isinstance(resources, list) and resources and isinstance(resources[0], dict):
        head = resources[0]
        rid = first(text(head.get("ARN")), text(head.get("arn")))
        if rid:
            resource = prune({"type": text(head.get("type")), "id": rid, "name": _short_name(rid)})
        if len(resources) > 1:
            extra_resources = resources[1:]
    if resource is None:
        resource = _param_resource(service, record.get("requestParameters"))
    if resource:
        event["resource"] = resource
    if outcome == "denied":
        event["policy"] = prune({"decision": "deny", "enforcer": "aws-iam", "reason": error_message})

    attributes = prune({
        "aws.event_type": record.get("eventType"),
        "aws.event_category": record.get("eventCategory"),
        "aws.read_only": record.get("readOnly"),
        "aws.management_event": record.get("managementEvent"),
        "aws.identity_type": id_type,
        "aws.error_code": error_code,
        "aws.error_message": error_message,
        "aws.source_ip_address": None if ip_like else source_ip,
        "aws.mfa_authenticated": (session_ctx.get("attributes") or {}).get("mfaAuthenticated")
        if isinstance(session_ctx.get("attributes"), dict) else None,
        "aws.user_name": text(identity.get("userName")),
        "aws.vpc_endpoint_id": record.get("vpcEndpointId"),
        "aws.shared_event_id": record.get("sharedEventID"),
        "aws.resources": extra_resources,
    })
    if attributes:
        event["attributes"] = attributes
    return event
