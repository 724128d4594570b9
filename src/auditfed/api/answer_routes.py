"""Answers: traces, principal timelines, the compliance questions and evidence bundles.

Every route needs an ``auditor`` or ``admin`` token. Values from the caller reach the
store only as bound parameters (see :mod:`auditfed.query.reading`); bad input is a
400 problem document.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response, StreamingResponse

from auditfed.api.deps import READERS, authorise, node_of
from auditfed.api.responses import JSON
from auditfed.errors import InvalidInput
from auditfed.query import compliance, evidence
from auditfed.query.reading import parse_checked, parse_time_bound, wait_indexed
from auditfed.query.timeline import DEFAULT_GAP_SECONDS, principal_timeline
from auditfed.query.traces import get_trace

router = APIRouter(tags=["answers"])


def _ready(request: Request) -> Any:
    authorise(request, *READERS)
    node = node_of(request)
    wait_indexed(node)
    return node


@router.get("/v1/traces/{trace_id}", summary="Every event of one trace, ordered and as a span tree")
def trace(request: Request, trace_id: str) -> Response:
    node = _ready(request)
    return JSON(get_trace(node.store, trace_id))


@router.get("/v1/principals/{principal:path}/timeline", summary="What one principal did, across all sources")
def timeline(
    request: Request,
    principal: str,
    limit: int = Query(100, ge=1, le=10_000, description="the last N events"),
    gap: float = Query(DEFAULT_GAP_SECONDS, gt=0, le=10**9, description="idle seconds that count as a gap"),
) -> Response:
    node = _ready(request)
    return JSON(principal_timeline(node.store, principal, directory=getattr(node, "directory", None),
                                   limit=limit, gap_seconds=gap))


@router.get("/v1/who-accessed", summary="Who read, queried or exported a resource, and when")
def who_accessed(
    request: Request,
    resource: str = Query(min_length=1, max_length=1024, description="resource id; * is a wildcard"),
    limit: int = Query(1000, ge=1, le=10_000),
) -> Response:
    node = _ready(request)
    return JSON(compliance.who_accessed(node.store, resource, limit=limit))


@router.get("/v1/who-changed", summary="Every change of a resource: who, when, from where, why")
def who_changed(
    request: Request,
    resource: str = Query(min_length=1, max_length=1024, description="resource id; * is a wildcard"),
    limit: int = Query(1000, ge=1, le=10_000),
) -> Response:
    node = _ready(request)
    return JSON(compliance.who_changed(node.store, resource, limit=limit))


@router.get("/v1/enforcement/{trace_id}", summary="Was access policy enforced at every hop of a request")
def enforcement(request: Request, trace_id: str) -> Response:
    node = _ready(request)
    return JSON(compliance.enforcement(node.store, trace_id))


@router.get("/v1/unjustified-changes", summary="Changes without a stated reason in a time range")
def unjustified_changes(
    request: Request,
    since: str | None = Query(None, max_length=64, description="from (inclusive): RFC 3339, date, now-7d"),
    until: str | None = Query(None, max_length=64, description="to (exclusive)"),
    limit: int = Query(1000, ge=1, le=10_000),
) -> Response:
    node = _ready(request)
    return JSON(compliance.unjustified_changes(
        node.store, since=parse_time_bound("since", since), until=parse_time_bound("until", until), limit=limit))


class EvidenceRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: str = Field("", max_length=4096, description="query language text; empty: every event")
    limit: int | None = Field(None, ge=1, description="at most this many events")
    consistency_from: list[int] = Field(default_factory=list, max_length=16,
                                        description="add consistency proofs from these older tree sizes")


@router.post("/v1/evidence", summary="An offline-verifiable evidence bundle (JSON Lines, streamed)")
async def evidence_bundle(request: Request, body: EvidenceRequest) -> Response:
    authorise(request, *READERS)
    node = node_of(request)
    expr = parse_checked(body.query)  # a bad query is a 400 before anything streams
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
