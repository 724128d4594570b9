"""``POST /v1/events``: events in auditfed's own format."""

from __future__ import annotations

from dataclasses import dataclass
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


@dataclass(slots=True)
class Ingested:
    """What became of a batch of items: per item a result, and the counts."""

    results: list[dict[str, Any]]
    #: Validation errors, ``{"item", "path", "reason"}`` (also for unparsable items).
    errors: list[dict[str, Any]]
    accepted: int = 0
    duplicates: int = 0

    @property
    def rejected(self) -> int:
        return len(self.results) - self.accepted - self.duplicates


async def sequence_items(node: Node, caller: Caller, items: list[Any]) -> Ingested:
    """Prepare and sequence a batch of decoded items; durable once this returns.

    Items that fail validation are rejected one by one; a source claiming another
    service raises :class:`~auditfed.errors.Forbidden` before anything is sequenced.
    """
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
    outcome = Ingested(results, errors)
    if not prepared:
        return outcome
    sequenced = await node.sequencer.append(prepared)
    duplicates = 0
    for p, answer in zip(prepared, sequenced, strict=True):
        duplicates += answer.duplicate
        results[p.position] = {
            "id": p.row.event_id,
            "index": answer.index,
            "status": "duplicate" if answer.duplicate else "accepted",
        }
        if answer.index is None:  # durable, queued for the cluster's leader (ingest/cluster.py)
            results[p.position]["sequenced"] = False
    if duplicates:
        node.metrics.duplicates.inc(duplicates)
    outcome.accepted = len(prepared) - duplicates
    outcome.duplicates = duplicates
    return outcome


async def ingest_items(node: Node, caller: Caller, items: list[Any]) -> Response:
    """Prepare, sequence and answer for a batch of decoded items."""
    outcome = await sequence_items(node, caller, items)
    return answer(outcome)


def answer(outcome: Ingested, **extra: Any) -> Response:
    """The answer to a batch: 200 with per-item results, or 422 if nothing was taken."""
    if not outcome.accepted and not outcome.duplicates and outcome.errors:
        first = outcome.errors[0]
        return problem(
            422, "Invalid event",
            f"no event was accepted; item {first['item']}: {first['path']}: {first['reason']}",
            errors=outcome.errors, results=outcome.results, **extra,
        )
    return JSON({
        "accepted": outcome.accepted,
        "duplicates": outcome.duplicates,
        "rejected": outcome.rejected,
        **extra,
        "results": outcome.results,
    })


def _rejected(item: Any, reason: str) -> dict[str, Any]:
    event_id = item.get("id") if isinstance(item, dict) else None
    return {
        "id": event_id if isinstance(event_id, str) else None,
        "index": None,
        "status": "rejected",
        "error": reason,
    }
