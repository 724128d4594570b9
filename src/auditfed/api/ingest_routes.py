"""``POST /v1/events``: events in auditfed's own format."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from auditfed.api.deps import WRITERS, authorise_async, node_of
from auditfed.api.problems import BODY_PROBLEMS, problem
from auditfed.api.responses import JSON, read_body
from auditfed.event.model import format_time
from auditfed.identity.tokens import Caller
from auditfed.ingest.pipeline import EVENTS, IngestRequest
from auditfed.ingest.prepare import PreparedBatch
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


@router.post("/v1/events", openapi_extra=_BODY_DOC, summary="Append audit events", responses=BODY_PROBLEMS)
async def post_events(request: Request) -> Response:
    """One event, a JSON array or NDJSON; gzip accepted. 200 once durable.

    Items are judged one by one: the answer lists each item's index or error. If no
    item is acceptable the answer is a 422 problem listing every item's error. A
    ``source`` token may write only as its own service: an event claiming another
    makes the whole request 403, and nothing of it is stored.
    """
    node = node_of(request)
    caller = await authorise_async(request, *WRITERS)
    batch = await prepare_body(request, node, caller, EVENTS)
    return answer(await sequence_batch(node, batch))


async def prepare_body(
    request: Request, node: Node, caller: Caller, format: str,
    options: dict[str, Any] | None = None,
) -> PreparedBatch:
    """Read the request's body and have the node's preparer decode and prepare it."""
    settings = node.settings
    body = await read_body(request, settings.max_body_bytes)
    headers = request.headers
    return await node.preparer.prepare(IngestRequest(
        format=format,
        body=body,
        caller=caller,
        observed=format_time(datetime.now(UTC)),
        max_body_bytes=settings.max_body_bytes,
        max_events=settings.max_events_per_request,
        max_event_bytes=settings.max_event_bytes,
        content_type=headers.get("content-type"),
        content_encoding=headers.get("content-encoding"),
        headers=dict(headers) if format != EVENTS else {},
        options=options or {},
    ))


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


async def sequence_batch(node: Node, batch: PreparedBatch) -> Ingested:
    """Sequence the prepared events of a batch; durable once this returns."""
    prepared, results = batch.prepared, batch.results
    if batch.errors:
        node.metrics.rejected.labels("invalid").inc(len(results) - len(prepared))
    outcome = Ingested(results, batch.errors)
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


def answer(outcome: Ingested, **extra: Any) -> Response:
    """The answer to a batch: 200 with per-item results, or a problem if nothing was
    taken: 413 when every rejected item was too large, else 422."""
    if not outcome.accepted and not outcome.duplicates and outcome.errors:
        first = outcome.errors[0]
        too_large = all(error.get("status") == 413 for error in outcome.errors)
        return problem(
            *((413, "Payload too large") if too_large else (422, "Invalid event")),
            f"no event was accepted; item {first['item']}: {first['path']}: {first['reason']}",
            errors=outcome.errors, results=outcome.results, **extra,
        )
    return JSON({
        "accepted": outcome.accepted,
        "duplicates": outcome.duplicates,
        "rejected": outcome.rejected,
        **extra,
        "results": outcome.results,
        "errors": outcome.errors,  # every problem of every rejected item (the CLI lists them all)
    })
