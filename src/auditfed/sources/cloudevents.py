"""CloudEvents 1.0 over HTTP -> auditfed events.

Specs: CloudEvents 1.0.2 core, the HTTP protocol binding (binary mode with ``ce-*``
headers, structured mode ``application/cloudevents+json``, batch mode
``application/cloudevents-batch+json``), the JSON event format, and the Distributed
Tracing extension (``traceparent``, W3C Trace Context) and Auth Context extension
(``authtype``, ``authid``). https://github.com/cloudevents/spec/tree/v1.0.2

Mapping: ``id`` = CE ``id``; ``action`` = CE ``type``; ``source.service`` = CE
``source``; ``time`` = CE ``time``; ``resource.id`` = CE ``subject``; ``actor`` from the
``authid``/``authtype`` extension, else ``data.actor`` (string or object with ``id``)
or ``data.user``; when no actor is known the emitting source is recorded as the actor
(type ``service``); ``trace`` from the ``traceparent`` extension; ``outcome`` and
``reason`` from ``data.outcome``/``data.reason`` when valid.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote

import orjson

from auditfed.errors import InvalidInput
from auditfed.event import OUTCOMES, strict_json
from auditfed.sources.base import (
    Decoded,
    RecordError,
    RecordProblem,
    UnsupportedContentType,
    emit,
    media_type,
    parse_traceparent,
    prune,
    read_json_records,
    text,
)

KIND = "cloudevents"
STRUCTURED = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"
_CONTEXT = frozenset({
    "specversion", "id", "source", "type", "datacontenttype", "dataschema", "subject",
    "time", "data", "data_base64",
})
_AUTH_TYPES = {
    "app_user": "user", "user": "user", "service_account": "service", "api_key": "api_key",
    "system": "system", "unauthenticated": "anonymous", "unknown": "unknown",
}


def decode(
    body: bytes,
    content_type: str | None,
    headers: Mapping[str, str],
    options: Mapping[str, Any] | None = None,
) -> Decoded:
    lowered = {k.lower(): v for k, v in headers.items()}
    decoded = Decoded(KIND)
    if "ce-specversion" in lowered:
        record = _from_binary(body, content_type, lowered)
        emit(decoded, 0, lambda: normalise(record))
        return decoded
    mt = media_type(content_type)
    if mt == STRUCTURED:
        try:
            record = strict_json.loads(body)
        except orjson.JSONDecodeError as exc:
            raise InvalidInput(f"invalid CloudEvent (structured mode): {exc}") from None
        records: list[tuple[int, Any]] = [(0, record)]
    elif mt in (BATCH, "application/json", "application/x-ndjson", ""):
        records = read_json_records(body, what="CloudEvents")
    else:
        raise UnsupportedContentType(
            f"unsupported content type {content_type!r} for CloudEvents: use {STRUCTURED}, "
            f"{BATCH}, or binary mode with ce-* headers"
        )
    for position, record in records:
        if isinstance(record, RecordError):
            decoded.add(position, record)
        elif not isinstance(record, dict):
            decoded.error(position, "a CloudEvent must be a JSON object")
        else:
            emit(decoded, position, lambda r=record: normalise(r))
    return decoded


def _from_binary(body: bytes, content_type: str | None, headers: Mapping[str, str]) -> dict[str, Any]:
    """Binary mode: attributes from ``ce-*`` headers (percent-decoded), data = body."""
    record: dict[str, Any] = {}
    for key, value in headers.items():
        if key.startswith("ce-") and len(key) > 3:
            record[key[3:]] = unquote(value)
    if content_type:
        record["datacontenttype"] = content_type
    mt = media_type(content_type)
    if body:
        if mt == "application/json" or mt.endswith("+json"):
            try:
                record["data"] = strict_json.loads(body)
            except orjson.JSONDecodeError as exc:
                raise InvalidInput(f"CloudEvent data is not valid JSON: {exc}") from None
        elif mt.startswith("text/"):
            record["data"] = body.decode("utf-8", errors="replace")
        else:
            record["data_base64"] = base64.b64encode(body).decode()
    return record


def _actor_from_data(data: Any) -> dict[str, Any] | None:
    if not isinstance(data, dict):
        return None
    for key in ("actor", "user", "principal"):
        value = data.get(key)
        if isinstance(value, str) and value.strip():
            return {"id": value.strip()}
        if isinstance(value, dict):
            ident = text(value.get("id")) or text(value.get("login")) or text(value.get("name"))
            if ident:
                actor = {"id": ident}
                if text(value.get("type")):
                    actor["type"] = value["type"]
                return actor
    return None


def normalise(record: Mapping[str, Any]) -> dict[str, Any]:
    missing = [k for k in ("specversion", "id", "source", "type") if not text(record.get(k))]
    if missing:
        raise RecordProblem(f"CloudEvent without required attribute(s): {', '.join(missing)}")
    if not str(record["specversion"]).startswith("1."):
        raise RecordProblem(f"unsupported CloudEvents specversion {record['specversion']!r}")
    source = text(record["source"])
    assert source is not None
    data = record.get("data")
    authid = text(record.get("authid"))
    if authid:
        actor: dict[str, Any] = {"id": authid}
        authtype = text(record.get("authtype"))
        if authtype:
            actor["type"] = _AUTH_TYPES.get(authtype, authtype)
    else:
        actor = _actor_from_data(data) or {"id": source, "type": "service"}
    event: dict[str, Any] = {
        "id": record["id"],
        "action": record["type"],
        "actor": actor,
        "source": {"service": source, "kind": KIND},
        "original": dict(record),
    }
    if text(record.get("time")):
        event["time"] = record["time"]
    subject = text(record.get("subject"))
    if subject:
        event["resource"] = {"id": subject, "name": subject.rsplit("/", 1)[-1] or subject}
    trace = parse_traceparent(record.get("traceparent"))
    if trace:
        event["trace"] = trace
    if isinstance(data, dict):
        outcome = text(data.get("outcome"))
        if outcome and outcome.lower() in OUTCOMES:
            event["outcome"] = outcome.lower()
        reason = text(data.get("reason"))
        if reason:
            event["reason"] = reason
    extensions = {k: v for k, v in record.items() if k not in _CONTEXT}
    attributes = prune({
        "cloudevents.specversion": record.get("specversion"),
        "cloudevents.datacontenttype": record.get("datacontenttype"),
        "cloudevents.dataschema": record.get("dataschema"),
        "cloudevents.extensions": extensions,
    })
    if attributes:
        event["attributes"] = attributes
    return event
