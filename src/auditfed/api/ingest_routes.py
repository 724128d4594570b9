"""``POST /v1/events``: events in auditfed's own format."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from auditfed.api.deps import WRITERS, authorise, node_of
from auditfed.api.problems import problem
from auditfed.api.responses import JSON, read_body
from auditfed.errors import InvalidEvent, InvalidInput, PayloadTooLarge
from auditfed.event.model import format_time
from auditfed.identity.tokens import Caller
from auditfed.ingest.body import BadItem, inflate, parse_json_items
from auditfed.ingest.prepare import Prepared, prepare_event
from auditfed.node import Node

router = APIRouter(tags=["ingest"])

_BODY_DOC = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "/v1/schema/event"}},
            "application/x-ndjson": {"schema": {"type": "string"}},
        },
    }
}


@router.post("/v1/events", openapi_extra=_BODY_DOC, summary="Append audit events")
async def post_events(request: Request) -> Response:
    """One event, a JSON array or NDJSON; gzip accepted. 200 once durable.

    Items are judged one by one: the answer lists each item's index or error. If no
    item is acceptable the answer is a 422 problem listing every item's error. A
    ``source`` token may write only as its own service: an event claiming another
    makes the whole request 403, and nothing of it is stored.
    """
    node = node_of(request)
    caller = authorise(request, *WRITERS)
    items = await _read_items(request, node)
    return await ingest_items(node, caller, items)


async def _read_items(request: Request, node: Node) -> list[Any]:
    limit = node.settings.max_body_bytes
    body = inflate(await read_body(request, limit), request.headers.get("content-encoding"), limit)
    items = parse_json_items(body, request.headers.get("content-type"))
    if not items:
        raise InvalidInput("the body holds no events")
    if len(items) > node.settings.max_events_per_request:
        raise PayloadTooLarge(
            f"{len(items)} events in one request; the limit is "
            f"{node.settings.max_events_per_request}"
        )
    return items


async def ingest_items(node: Node, caller: Caller, items: list[Any]) -> Response:
    """Prepare, sequence and answer for a batch of decoded items."""
    observed = format_time(datetime.now(UTC))
    results: list[dict[str, Any]] = [{} for _ in items]
    prepared: list[Prepared] = []
    errors: list[dict[str, Any]] = []
    for position, item in enumerate(items):
        if isinstance(item, BadItem):
            errors.append({"item": position, "path": "$", "reason": item.reason})
            results[position] = _rejected(None, item.reason)
            continue
        try:
            prepared.append(prepare_event(item, position, caller, observed, node.enrichers))
        except InvalidEvent as exc:
            errors.extend(exc.errors or [{"item": position, "path": "$", "reason": exc.detail}])
            results[position] = _rejected(item, exc.detail)
    if errors:
        node.metrics.rejected.labels("invalid").inc(len(items) - len(prepared))
    if not prepared:
        first = errors[0]
        return problem(
            422, "Invalid event",
            f"no event was accepted; item {first['item']}: {first['path']}: {first['reason']}",
            errors=errors, results=results,
        )
    sequenced = await node.sequencer.append(prepared)
    duplicates = 0
    for p, outcome in zip(prepared, sequenced, strict=True):
        duplicates += outcome.duplicate
        results[p.position] = {
            "id": p.row.event_id,
            "index": outcome.index,
            "status": "duplicate" if outcome.duplicate else "accepted",
        }
    if duplicates:
        node.metrics.duplicates.inc(duplicates)
    return JSON({
        "accepted": len(prepared) - duplicates,
        "duplicates": duplicates,
        "rejected": len(items) - len(prepared),
        "results": results,
    })


def _rejected(item: Any, reason: str) -> dict[str, Any]:
    event_id = item.get("id") if isinstance(item, dict) else None
    return {
        "id": event_id if isinstance(event_id, str) else None,
        "index": None,
        "status": "rejected",
        "error": reason,
    }
