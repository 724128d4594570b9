"""OpenTelemetry logs over OTLP/HTTP (``POST /v1/logs``) -> auditfed events.

Specs: OTLP 1.x specification, "OTLP/HTTP" (binary protobuf ``application/x-protobuf``
and JSON ``application/json`` encodings, partial success) and the protobuf definitions
of ``opentelemetry-proto`` (``ExportLogsServiceRequest``); the JSON encoding is the
proto3 JSON mapping with hex trace/span ids, int64 as strings, lowerCamelCase keys.

Mapping (one event per LogRecord): ``action`` = EventName, else attribute
``audit.action``; ``actor.id`` from ``audit.actor.id``, ``user.id``, ``enduser.id`` (in
that order); ``resource`` from ``audit.resource.type``/``.id``/``.name``; ``outcome``
from ``audit.outcome``; ``reason`` from ``audit.reason``; ``trace`` from
TraceId/SpanId; ``source.service`` from the resource's ``service.name``; environment
from ``deployment.environment.name``; ``time`` from Timestamp, else ObservedTimestamp;
the remaining record attributes into ``attributes``. A record without action or actor
is rejected through OTLP partial success with the reason.

A truncated protobuf body is salvaged at the wire level: every LogRecord that arrived
complete is decoded, the cut-off one is a per-record error.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterator, Mapping
from typing import Any

import orjson
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from auditfed.errors import InvalidInput
from auditfed.event import OUTCOMES, strict_json
from auditfed.sources.base import (
    Decoded,
    RecordProblem,
    UnsupportedContentType,
    emit,
    epoch_ns_to_rfc3339,
    media_type,
    text,
)

KIND = "otel"
PROTOBUF_TYPES = ("application/x-protobuf", "application/protobuf")
JSON_TYPES = ("application/json",)

_ACTOR_KEYS = ("audit.actor.id", "user.id", "enduser.id")
_CONSUMED = frozenset({
    "audit.action", *_ACTOR_KEYS, "audit.actor.type", "audit.actor.issuer",
    "audit.actor.session", "audit.resource.type", "audit.resource.id", "audit.resource.name",
    "audit.outcome", "audit.reason", "audit.request_id", "audit.id", "log.record.uid",
    "audit.policy.decision", "audit.policy.rule", "audit.policy.enforcer",
    "audit.policy.reason", "client.address", "user_agent.original", "session.id",
})
_RESOURCE_CONSUMED = frozenset({
    "service.name", "deployment.environment.name", "deployment.environment", "host.name",
    "cloud.region", "cloud.account.id",
})


# --- AnyValue conversion --------------------------------------------------------------


def _pb_value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "string_value":
        return value.string_value
    if kind == "int_value":
        return value.int_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "double_value":
        return value.double_value
    if kind == "array_value":
        return [_pb_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _pb_value(kv.value) for kv in value.kvlist_value.values}
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode()
    return None


def _pb_json_value(value: AnyValue) -> dict[str, Any]:
    """AnyValue -> its OTLP/JSON form (for ``original``)."""
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return {"stringValue": value.string_value}
    if kind == "int_value":
        return {"intValue": str(value.int_value)}
    if kind == "bool_value":
        return {"boolValue": value.bool_value}
    if kind == "double_value":
        return {"doubleValue": value.double_value}
    if kind == "array_value":
        return {"arrayValue": {"values": [_pb_json_value(v) for v in value.array_value.values]}}
    if kind == "kvlist_value":
        return {"kvlistValue": {"values": [
            {"key": kv.key, "value": _pb_json_value(kv.value)} for kv in value.kvlist_value.values
        ]}}
    if kind == "bytes_value":
        return {"bytesValue": base64.b64encode(value.bytes_value).decode()}
    return {}


def _json_value(value: Any) -> Any:
    if not isinstance(value, dict):
        return None
    if "stringValue" in value:
        return value["stringValue"]
    if "intValue" in value:
        return int(value["intValue"])
    if "boolValue" in value:
        return bool(value["boolValue"])
    if "doubleValue" in value:
        return float(value["doubleValue"])
    if "arrayValue" in value:
        return [_json_value(v) for v in (value["arrayValue"] or {}).get("values", [])]
    if "kvlistValue" in value:
        return _json_attrs((value["kvlistValue"] or {}).get("values", []))
    if "bytesValue" in value:
        return value["bytesValue"]
    return None


def _json_attrs(items: Any) -> dict[str, Any]:
    if not isinstance(items, list):
        raise RecordProblem("attributes must be an array of {key, value}")
    out: dict[str, Any] = {}
    for kv in items:
        if isinstance(kv, dict) and isinstance(kv.get("key"), str):
            out[kv["key"]] = _json_value(kv.get("value"))
    return out


def _id_hex(value: Any, size: int) -> str | None:
    """OTLP/JSON trace/span id (hex; tolerate base64 from proto3-JSON encoders)."""
    if not isinstance(value, str) or not value:
        return None
    lowered = value.lower()
    if len(lowered) == size * 2:
        try:
            bytes.fromhex(lowered)
        except ValueError:
            pass
        else:
            return lowered if lowered.strip("0") else None
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise RecordProblem(f"invalid {'traceId' if size == 16 else 'spanId'} {value!r}") from None
    if len(raw) != size:
        raise RecordProblem(f"invalid {'traceId' if size == 16 else 'spanId'} {value!r}")
    hexed = raw.hex()
    return hexed if hexed.strip("0") else None


# --- mapping --------------------------------------------------------------------------


def _str(attrs: Mapping[str, Any], key: str) -> str | None:
    value = attrs.get(key)
    return None if value is None else text(value)


def normalise(
    resource: Mapping[str, Any],
    scope: Mapping[str, Any],
    attrs: dict[str, Any],
    *,
    event_name: str | None,
    time_ns: int,
    observed_ns: int,
    trace_id: str | None,
    span_id: str | None,
    severity_text: str | None,
    severity_number: int,
    body: Any,
    original: dict[str, Any],
    default_service: str | None,
) -> dict[str, Any]:
    action = text(event_name) or _str(attrs, "audit.action")
    if not action:
        raise RecordProblem("log record has no action: set EventName or attribute audit.action")
    actor_id = next((v for v in (_str(attrs, k) for k in _ACTOR_KEYS) if v), None)
    if not actor_id:
        raise RecordProblem(
            "log record has no actor: set attribute audit.actor.id, user.id or enduser.id"
        )
    actor: dict[str, Any] = {"id": actor_id}
    for key, field in (("audit.actor.type", "type"), ("audit.actor.issuer", "issuer"),
                       ("audit.actor.session", "session"), ("session.id", "session"),
                       ("client.address", "ip"), ("user_agent.original", "user_agent")):
        value = _str(attrs, key)
        if value and field not in actor:
            actor[field] = value
    service = text(resource.get("service.name")) or default_service or "unknown_service"
    source: dict[str, Any] = {"service": service, "kind": KIND}
    for key, field in (("deployment.environment.name", "environment"),
                       ("deployment.environment", "environment"), ("host.name", "host"),
                       ("cloud.region", "region"), ("cloud.account.id", "account")):
        value = text(resource.get(key))
        if value and field not in source:
            source[field] = value
    event: dict[str, Any] = {"action": action, "actor": actor, "source": source}
    stamp = time_ns or observed_ns
    if stamp:
        event["time"] = epoch_ns_to_rfc3339(stamp)
    outcome = _str(attrs, "audit.outcome")
    if outcome:
        lowered = outcome.lower()
        if lowered not in OUTCOMES:
            raise RecordProblem(f"audit.outcome must be one of {', '.join(OUTCOMES)}, got {outcome!r}")
        event["outcome"] = lowered
    res = {k: v for k, v in (("type", _str(attrs, "audit.resource.type")),
                             ("id", _str(attrs, "audit.resource.id")),
                             ("name", _str(attrs, "audit.resource.name"))) if v}
    if res:
        event["resource"] = res
    for key, field in (("audit.reason", "reason"), ("audit.request_id", "request_id"),
                       ("audit.id", "id"), ("log.record.uid", "id")):
        value = _str(attrs, key)
        if value and field not in event:
            event[field] = value
    decision = _str(attrs, "audit.policy.decision")
    if decision:
        policy = {"decision": decision.lower()}
        for key in ("rule", "enforcer", "reason"):
            value = _str(attrs, f"audit.policy.{key}")
            if value:
                policy[key] = value
        event["policy"] = policy
    if trace_id:
        event["trace"] = {"trace_id": trace_id}
        if span_id:
            event["trace"]["span_id"] = span_id
    extra = {k: v for k, v in attrs.items() if k not in _CONSUMED}
    if severity_text:
        extra["otel.severity_text"] = severity_text
    if severity_number:
        extra["otel.severity_number"] = severity_number
    if body is not None and body != "":
        extra["otel.body"] = body
    if scope.get("name"):
        extra["otel.scope.name"] = scope["name"]
    if scope.get("version"):
        extra["otel.scope.version"] = scope["version"]
    rest = {k: v for k, v in resource.items() if k not in _RESOURCE_CONSUMED}
    if rest:
        extra["otel.resource"] = rest
    if extra:
        event["attributes"] = extra
    event["original"] = original
    return event


# --- decoding -------------------------------------------------------------------------


def decode(
    body: bytes,
    content_type: str | None,
    headers: Mapping[str, str],
    options: Mapping[str, Any] | None = None,
) -> Decoded:
    options = options or {}
    mt = media_type(content_type)
    default_service = text(options.get("service"))
    if mt in PROTOBUF_TYPES:
        return _decode_protobuf(body, default_service)
    if mt in JSON_TYPES:
        return _decode_json(body, default_service)
    raise UnsupportedContentType(
        f"unsupported content type {content_type!r} for OTLP/HTTP logs: use "
        "application/x-protobuf or application/json"
    )


def _decode_protobuf(body: bytes, default_service: str | None) -> Decoded:
    decoded = Decoded("otlp", otlp_json=False)
    truncated_at: int | None = None
    try:
        request = ExportLogsServiceRequest.FromString(body)
    except DecodeError as exc:
        request, truncated = _salvage(body)
        if request is None:
            raise InvalidInput(f"invalid OTLP protobuf: {exc}") from None
        truncated_at = truncated
    position = 0
    for rl in request.resource_logs:
        resource = {kv.key: _pb_value(kv.value) for kv in rl.resource.attributes}
        resource_json = [{"key": kv.key, "value": _pb_json_value(kv.value)}
                         for kv in rl.resource.attributes]
        for sl in rl.scope_logs:
            scope = {"name": sl.scope.name, "version": sl.scope.version}
            for rec in sl.log_records:
                emit(decoded, position, lambda r=rec, res=resource, rj=resource_json, sc=scope:
                     _from_pb(r, res, rj, sc, default_service))
                position += 1
    if truncated_at is not None:
        decoded.error(
            position,
            f"truncated protobuf: the log record after record {position - 1} is cut off "
            f"at byte {truncated_at}",
        )
    return decoded


def _from_pb(
    rec: LogRecord,
    resource: Mapping[str, Any],
    resource_json: list[dict[str, Any]],
    scope: Mapping[str, Any],
    default_service: str | None,
) -> dict[str, Any]:
    attrs: dict[str, Any] = {}
    attributes_json: list[dict[str, Any]] = []
    for kv in rec.attributes:
        value = kv.value
        if value.WhichOneof("value") == "string_value":
            attrs[kv.key] = value.string_value
            attributes_json.append({"key": kv.key, "value": {"stringValue": value.string_value}})
        else:
            attrs[kv.key] = _pb_value(value)
            attributes_json.append({"key": kv.key, "value": _pb_json_value(value)})
    trace_id = rec.trace_id.hex() if len(rec.trace_id) == 16 and rec.trace_id.strip(b"\0") else None
    span_id = rec.span_id.hex() if len(rec.span_id) == 8 and rec.span_id.strip(b"\0") else None
    original: dict[str, Any] = {}
    if rec.time_unix_nano:
        original["timeUnixNano"] = str(rec.time_unix_nano)
    if rec.observed_time_unix_nano:
        original["observedTimeUnixNano"] = str(rec.observed_time_unix_nano)
    if rec.severity_number:
        original["severityNumber"] = int(rec.severity_number)
    if rec.severity_text:
        original["severityText"] = rec.severity_text
    if rec.event_name:
        original["eventName"] = rec.event_name
    if rec.HasField("body"):
        original["body"] = _pb_json_value(rec.body)
    if attributes_json:
        original["attributes"] = attributes_json
    if rec.flags:
        original["flags"] = rec.flags
    if trace_id:
        original["traceId"] = trace_id
    if span_id:
        original["spanId"] = span_id
    if resource_json:
        original["resource"] = {"attributes": resource_json}
    if scope.get("name"):
        original["scope"] = {k: v for k, v in scope.items() if v}
    return normalise(
        resource, scope, attrs,
        event_name=rec.event_name or None,
        time_ns=rec.time_unix_nano,
        observed_ns=rec.observed_time_unix_nano,
        trace_id=trace_id,
        span_id=span_id,
        severity_text=rec.severity_text or None,
        severity_number=int(rec.severity_number),
        body=_pb_value(rec.body) if rec.HasField("body") else None,
        original=original,
        default_service=default_service,
    )


def _decode_json(body: bytes, default_service: str | None) -> Decoded:
    try:
        request = strict_json.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"invalid OTLP JSON: {exc}") from None
    if not isinstance(request, dict) or not isinstance(request.get("resourceLogs", []), list):
        raise InvalidInput("invalid OTLP JSON: expected an object with a resourceLogs array")
    decoded = Decoded("otlp", otlp_json=True)
    position = 0
    for rl in request.get("resourceLogs", []):
        rl = rl if isinstance(rl, dict) else {}
        res_obj = rl.get("resource") if isinstance(rl.get("resource"), dict) else {}
        try:
            resource = _json_attrs(res_obj.get("attributes", []))
        except RecordProblem:
            resource = {}
        for sl in rl.get("scopeLogs", []) if isinstance(rl.get("scopeLogs"), list) else []:
            sl = sl if isinstance(sl, dict) else {}
            sc = sl.get("scope") if isinstance(sl.get("scope"), dict) else {}
            scope = {"name": sc.get("name") or "", "version": sc.get("version") or ""}
            records = sl.get("logRecords", [])
            for rec in records if isinstance(records, list) else []:
                emit(decoded, position, lambda r=rec, res=resource, ro=res_obj, sc=scope:
                     _from_json(r, res, ro, sc, default_service))
                position += 1
    return decoded


def _from_json(
    rec: Any,
    resource: Mapping[str, Any],
    resource_obj: Mapping[str, Any],
    scope: Mapping[str, Any],
    default_service: str | None,
) -> dict[str, Any]:
    if not isinstance(rec, dict):
        raise RecordProblem("a logRecord must be a JSON object")
    attrs = _json_attrs(rec.get("attributes", []))
    original = dict(rec)
    if resource_obj.get("attributes"):
        original["resource"] = {"attributes": resource_obj["attributes"]}
    if scope.get("name"):
        original["scope"] = {k: v for k, v in scope.items() if v}
    try:
        time_ns = int(rec.get("timeUnixNano") or 0)
        observed_ns = int(rec.get("observedTimeUnixNano") or 0)
        severity = int(rec.get("severityNumber") or 0) if not isinstance(
            rec.get("severityNumber"), str) or rec["severityNumber"].isdigit() else 0
    except (TypeError, ValueError):
        raise RecordProblem("timeUnixNano/observedTimeUnixNano must be integers") from None
    return normalise(
        resource, scope, attrs,
        event_name=rec.get("eventName") if isinstance(rec.get("eventName"), str) else None,
        time_ns=time_ns,
        observed_ns=observed_ns,
        trace_id=_id_hex(rec.get("traceId"), 16),
        span_id=_id_hex(rec.get("spanId"), 8),
        severity_text=text(rec.get("severityText")),
        severity_number=severity,
        body=_json_value(rec.get("body")),
        original=original,
        default_service=default_service,
    )


# --- protobuf salvage -----------------------------------------------------------------


class _Cut(Exception):
    pass


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise _Cut
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise DecodeError("varint too long")


def _fields(buf: bytes) -> Iterator[tuple[int, int, bytes, bool]]:
    """Yield (field number, wire type, payload, complete) of a message's fields."""
    pos = 0
    while pos < len(buf):
        try:
            key, pos = _varint(buf, pos)
        except _Cut:
            return
        number, wire = key >> 3, key & 7
        if wire == 2:
            try:
                length, pos = _varint(buf, pos)
            except _Cut:
                return
            end = pos + length
            yield number, wire, buf[pos:end], end <= len(buf)
            if end > len(buf):
                return
            pos = end
        elif wire == 0:
            try:
                _, pos = _varint(buf, pos)
            except _Cut:
                return
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        else:
            raise DecodeError(f"unsupported wire type {wire}")


def _salvage(body: bytes) -> tuple[ExportLogsServiceRequest | None, int]:
    """Keep every complete LogRecord of a truncated request."""
    request = ExportLogsServiceRequest()
    got = 0
    try:
        for number, _wire, payload, complete in _fields(body):
            if number != 1:
                continue
            if complete:
                request.resource_logs.append(ResourceLogs.FromString(payload))
                got += sum(len(s.log_records) for s in request.resource_logs[-1].scope_logs)
                continue
            rl = request.resource_logs.add()
            for n2, _w2, p2, c2 in _fields(payload):
                if n2 == 1 and c2:
                    rl.resource.CopyFrom(Resource.FromString(p2))
                elif n2 == 2:
                    if c2:
                        rl.scope_logs.append(ScopeLogs.FromString(p2))
                        got += len(rl.scope_logs[-1].log_records)
                        continue
                    sl = rl.scope_logs.add()
                    for n3, _w3, p3, c3 in _fields(p2):
                        if n3 == 1 and c3:
                            sl.scope.ParseFromString(p3)
                        elif n3 == 2 and c3:
                            sl.log_records.append(LogRecord.FromString(p3))
                            got += 1
    except DecodeError:
        return None, 0
    if got == 0:
        return None, 0
    return request, len(body)


# --- response -------------------------------------------------------------------------


def response_body(rejected: int, message: str, *, json: bool) -> tuple[bytes, str]:
    """An ``ExportLogsServiceResponse`` in the request's encoding (OTLP partial success).

    ``rejected`` counts the records not accepted (decode errors plus any the pipeline
    refused); ``message`` says why. Returns (body, content type).
    """
    response = ExportLogsServiceResponse()
    if rejected:
        response.partial_success.rejected_log_records = rejected
        response.partial_success.error_message = message
    if json:
        payload: dict[str, Any] = {}
        if rejected:
            payload["partialSuccess"] = {"rejectedLogRecords": str(rejected), "errorMessage": message}
        return orjson.dumps(payload), "application/json"
    return response.SerializeToString(), "application/x-protobuf"


def partial_success(decoded: Decoded, *, extra_rejected: int = 0,
                    extra_messages: tuple[str, ...] = ()) -> tuple[bytes, str]:
    """The OTLP response for a decoded request, counting its per-record errors."""
    errors = decoded.errors
    rejected = len(errors) + extra_rejected
    messages = [f"record {e.position}: {e.message}" for e in errors[:10]] + list(extra_messages)
    if len(errors) > 10:
        messages.append(f"... and {len(errors) - 10} more")
    return response_body(rejected, "; ".join(messages), json=decoded.otlp_json)
