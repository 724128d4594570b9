"""From a request body to prepared events: inflate, decode, validate, enrich, canonicalise.

Everything an ingest request needs before the sequencer is a pure function of the
body, the caller and the node's settings, so it can run anywhere: inline, or in an
ingest worker process (:mod:`auditfed.ingest.workers`) so that several cores share
the CPU-heavy part (JSON parsing, schema validation, RFC 8785 bytes, SHA-256) while
the one sequencer only assigns indexes and writes.

``format`` is ``"events"`` for auditfed's own format (``POST /v1/events``: one object,
a JSON array or NDJSON) or a source decoder's name (:data:`auditfed.sources.DECODERS`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from auditfed.errors import InvalidInput, PayloadTooLarge
from auditfed.identity.tokens import Caller
from auditfed.ingest.body import GZIP_MAGIC, BadItem, inflate, parse_json_items
from auditfed.ingest.prepare import Enricher, PreparedBatch, prepare_items
from auditfed.sources import Decoded, RecordError, decode
from auditfed.sources.base import media_type

#: auditfed's own event format (``POST /v1/events``).
EVENTS = "events"
#: The attribute that keeps a normaliser's service name when the token's wins.
ORIGIN_SERVICE = "origin.service"
GZIP_TYPES = ("application/gzip", "application/x-gzip")


@dataclass(frozen=True, slots=True)
class IngestRequest:
    """One request body to prepare, with what the route knows about it."""

    format: str
    body: bytes
    caller: Caller
    #: When the node received the request (``observed_time`` of its events).
    observed: str
    max_body_bytes: int
    max_events: int
    #: Largest event stored (canonical bytes); a bigger one is rejected (413).
    max_event_bytes: int | None = None
    content_type: str | None = None
    content_encoding: str | None = None
    #: Request headers, lower-cased (CloudEvents binary mode reads ``ce-*``).
    headers: dict[str, str] = field(default_factory=dict)
    #: Decoder options (see :func:`auditfed.sources.decode`).
    options: dict[str, Any] = field(default_factory=dict)


def prepare_request(request: IngestRequest, enrichers: tuple[Enricher, ...]) -> PreparedBatch:
    """Decode and prepare one request body; per-item problems are in the batch.

    Raises :class:`InvalidInput` (or :class:`PayloadTooLarge`) when the body as a
    whole cannot be taken, :class:`~auditfed.errors.Forbidden` when a source token
    writes as another service.
    """
    body = inflate(request.body, request.content_encoding, request.max_body_bytes, request.max_events)
    decoded: Decoded | None = None
    if request.format == EVENTS:
        items = parse_json_items(body, request.content_type)
        if not items:
            raise InvalidInput("the body holds no events")
        noun = "events"
    else:
        decoded = _decode_source(request, body)
        items = [BadItem(i, item.message) if isinstance(item, RecordError) else item
                 for i, item in enumerate(decoded.items)]
        if request.format != "otlp":  # OTLP's service.name is a claim, checked as such
            bind_normalised_service(items, request.caller)
        noun = "records"
    if len(items) > request.max_events:
        raise PayloadTooLarge(
            f"{len(items)} {noun} in one request; the limit is {request.max_events}"
        )
    batch = prepare_items(items, request.caller, request.observed, enrichers, request.max_event_bytes,
                          relayed_chain=request.format != EVENTS)
    if decoded is not None:
        batch.decoded = decoded.without_events()
    return batch


def _decode_source(request: IngestRequest, body: bytes) -> Decoded:
    content_type = request.content_type
    if request.format != "otlp" and body[:2] == GZIP_MAGIC:
        body = inflate(body, "gzip", request.max_body_bytes, request.max_events)  # a .json.gz file (CloudTrail)
        if media_type(content_type) in GZIP_TYPES:
            content_type = None
    return decode(request.format, body, content_type, request.headers, options=request.options,
                  max_records=request.max_events)


def bind_normalised_service(items: list[Any], caller: Caller) -> None:
    """A source token's service replaces a normaliser's default (kept as an attribute)."""
    bound = caller.service if caller.role == "source" else None
    if bound is None:
        return
    for item in items:
        if not isinstance(item, dict):
            continue
        source = item.get("source")
        if not isinstance(source, dict):
            continue
        named = source.get("service")
        if named is not None and named != bound:
            attributes = item.get("attributes")
            if not isinstance(attributes, dict):
                attributes = item["attributes"] = {}
            attributes.setdefault(ORIGIN_SERVICE, named)
        source["service"] = bound
