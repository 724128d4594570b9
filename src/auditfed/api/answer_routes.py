"""Answers: traces, principal timelines, the compliance questions and evidence bundles.

Every route needs an ``auditor`` or ``admin`` token; each answer is itself recorded in
the log (``audit.*`` actions, see :func:`auditfed.api.deps.reader`), and a scoped
auditor's answers cover only their service / environment. Values from the caller reach
the store only as bound parameters (see :mod:`auditfed.query.reading`); bad input is a
400 problem document.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response, StreamingResponse

from auditfed.api.deps import MAX_INDEX, READERS, authorise, node_of, reader, record, scope_filter
from auditfed.api.problems import media_response
from auditfed.api.responses import JSON, DecodedBodyRoute
from auditfed.defaults import DEFAULT_GAP_SECONDS
from auditfed.errors import InvalidInput
from auditfed.query import compliance, evidence
from auditfed.query.reading import checked_value, parse_checked, parse_time_bound, wait_indexed
from auditfed.query.timeline import principal_timeline
from auditfed.query.traces import check_trace_id, get_trace

router = APIRouter(tags=["answers"], route_class=DecodedBodyRoute)


def _ready(request: Request, action: str) -> tuple[Any, dict[str, Any]]:
    """The node and the reading options (the reader's scope, the answer's byte budget);
    the access is recorded in the log first."""
    caller = reader(request, action)
    node = node_of(request)
    wait_indexed(node)
    return node, {"scope": scope_filter(caller, None), "max_bytes": node.settings.max_response_bytes}


@router.get("/v1/traces/{trace_id}", summary="Every event of one trace, ordered and as a span tree")
def trace(request: Request, trace_id: str) -> Response:
    check_trace_id(trace_id)
    node, options = _ready(request, "audit.trace")
    return JSON(get_trace(node.store, trace_id, **options))


@router.get("/v1/principals/{principal:path}/timeline", summary="What one principal did, across all sources")
def timeline(
    request: Request,
    principal: str,
    limit: int = Query(100, ge=1, le=10_000, description="the last N events"),
    gap: float = Query(DEFAULT_GAP_SECONDS, gt=0, le=10**9, description="idle seconds that count as a gap"),
) -> Response:
    checked_value("principal", principal)
    node, options = _ready(request, "audit.timeline")
    return JSON(principal_timeline(node.store, principal, directory=getattr(node, "directory", None),
                                   limit=limit, gap_seconds=gap, **options))


@router.get("/v1/who-accessed", summary="Who read, queried or exported a resource, and when")
def who_accessed(
    request: Request,
    resource: str = Query(min_length=1, max_length=1024, description="resource id; * is a wildcard"),
    limit: int = Query(1000, ge=1, le=10_000),
) -> Response:
    checked_value("resource", resource, wildcard=True)
    node, options = _ready(request, "audit.who_accessed")
    return JSON(compliance.who_accessed(node.store, resource, limit=limit, **options))


@router.get("/v1/who-changed", summary="Every change of a resource: who, when, from where, why")
def who_changed(
    request: Request,
    resource: str = Query(min_length=1, max_length=1024, description="resource id; * is a wildcard"),
    limit: int = Query(1000, ge=1, le=10_000),
) -> Response:
    checked_value("resource", resource, wildcard=True)
    node, options = _ready(request, "audit.who_changed")
    return JSON(compliance.who_changed(node.store, resource, limit=limit, **options))


@router.get("/v1/enforcement/{trace_id}", summary="Was access policy enforced at every hop of a request")
def enforcement(request: Request, trace_id: str) -> Response:
    check_trace_id(trace_id)
    node, options = _ready(request, "audit.enforcement")
    return JSON(compliance.enforcement(node.store, trace_id, **options))


@router.get("/v1/unjustified-changes", summary="Changes without a stated reason in a time range")
def unjustified_changes(
    request: Request,
    since: str | None = Query(None, max_length=64, description="from (inclusive): RFC 3339, date, now-7d"),
    until: str | None = Query(None, max_length=64, description="to (exclusive)"),
    limit: int = Query(1000, ge=1, le=10_000),
) -> Response:
    bounds = parse_time_bound("since", since), parse_time_bound("until", until)
    node, options = _ready(request, "audit.unjustified_changes")
    return JSON(compliance.unjustified_changes(node.store, since=bounds[0], until=bounds[1], limit=limit,
                                               **options))


class EvidenceRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: str = Field("", max_length=4096, description="query language text; empty: every event")
    limit: int | None = Field(None, ge=1, le=MAX_INDEX, description="at most this many events")
    consistency_from: list[Annotated[int, Field(ge=1, le=MAX_INDEX)]] = Field(
        default_factory=list, max_length=16, description="add consistency proofs from these older tree sizes")


@router.post("/v1/evidence", summary="An offline-verifiable evidence bundle (JSON Lines, streamed)",
             response_class=Response,
             responses=media_response("application/x-ndjson", "the bundle, one JSON document a line"))
async def evidence_bundle(request: Request, body: EvidenceRequest) -> Response:
    caller = authorise(request, *READERS)
    node = node_of(request)
    expr = scope_filter(caller, parse_checked(body.query))  # a bad query is a 400 before anything streams
    # The record of this export is appended before the checkpoint is requested, so the
    # bundle's checkpoint covers it.
    record(request, caller, "audit.evidence", wait=False, evidence_query=body.query[:2048], limit=body.limit)
    checkpoint = await node.sequencer.checkpoint()
    await run_in_threadpool(wait_indexed, node)
    for old in body.consistency_from:
        if not 0 < old <= checkpoint.size:
            raise InvalidInput(f"consistency_from {old} must be between 1 and the tree size {checkpoint.size}")
    lines = evidence.iter_bundle(
        node.store, expr, query=body.query, verifier_key=node.signer.verifier_key(), checkpoint=checkpoint,
        consistency_from=body.consistency_from, limit=body.limit,
    )
    filename = f"evidence-{checkpoint.size}.afev.jsonl"
    return StreamingResponse(lines, media_type="application/x-ndjson",
                             headers={"Content-Disposition": f'attachment; filename="{filename}"',
                                      "Cache-Control": "no-store"})
