"""Reading events: one by index, or by query."""

from __future__ import annotations

from typing import Literal

import orjson
from fastapi import APIRouter, Path, Query, Request
from starlette.responses import Response

from auditfed.api.deps import MAX_INDEX, node_of, reader, scope_filter
from auditfed.api.problems import problem_responses
from auditfed.api.responses import JSON
from auditfed.errors import Gone, NotFound
from auditfed.query.language import parse_query
from auditfed.sources.ocsf import to_ocsf
from auditfed.store.filters import Query as StoreQuery

router = APIRouter(tags=["query"])


@router.get("/v1/events/{index}", summary="One event by its log index", responses=problem_responses(410))
def get_event(
    request: Request,
    # a leaf index is below the tree size, itself at most MAX_INDEX
    index: int = Path(ge=0, le=MAX_INDEX - 1, description="the event's log index"),
    format: Literal["auditfed", "ocsf"] = Query("auditfed", description="ocsf: the OCSF view"),
) -> Response:
    caller = reader(request, "audit.event.read")
    node = node_of(request)
    rows = node.store.entries(index, index + 1)
    if not rows and index < (retained_from := node.store.retained_from()):
        raise Gone(f"event {index} was removed by retention (entries below {retained_from})",
                   retained_from=retained_from)
    event = orjson.loads(rows[0][1]) if rows else None
    if event is None or not caller.may_see(event):
        raise NotFound(f"no event at index {index}")
    if format == "ocsf":
        return JSON({"index": index, "format": "ocsf", "event": to_ocsf(event, index)})
    return JSON({"index": index, "event": event})


@router.get("/v1/events", summary="Search events")
def search_events(
    request: Request,
    q: str = Query("", max_length=4096, description="query, e.g. action:db.* actor:alice"),
    limit: int = Query(100, ge=1, le=1000),
    cursor: int | None = Query(None, ge=0, le=MAX_INDEX, description="next_cursor of the previous page"),
    order: Literal["newest", "oldest"] = "newest",
) -> Response:
    """A page may hold fewer events than ``limit`` (at most ``max_response_bytes`` of
    events, at least one); page on with ``next_cursor`` until it is null."""
    expr = parse_query(q)  # a malformed query is refused before anything is recorded
    caller = reader(request, "audit.search")
    node = node_of(request)
    node.sequencer.wait_indexed()
    query = StoreQuery(
        expr=scope_filter(caller, expr), newest_first=order == "newest", limit=limit, after=cursor
    )
    rows, more = node.store.search_within(query, node.settings.max_response_bytes)
    next_cursor = rows[-1][0] if more else None
    # The stored bytes are the event's canonical JSON: spliced in, not decoded and
    # encoded again (a page of large events would take several times its size).
    events = b",".join(b'{"index":%d,"event":%b}' % (index, data) for index, data in rows)
    del rows
    return Response(b'{"events":[%b],"next_cursor":%b}' % (events, orjson.dumps(next_cursor)),
                    media_type="application/json")
