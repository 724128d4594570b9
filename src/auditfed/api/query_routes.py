"""Reading events: one by index, or by query."""

from __future__ import annotations

from typing import Literal

import orjson
from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from auditfed.api.deps import READERS, authorise, node_of
from auditfed.api.responses import JSON
from auditfed.errors import NotFound
from auditfed.query.language import parse_query
from auditfed.store.filters import Query as StoreQuery

router = APIRouter(tags=["query"])


@router.get("/v1/events/{index}", summary="One event by its log index")
def get_event(request: Request, index: int) -> Response:
    authorise(request, *READERS)
    node = node_of(request)
    rows = node.store.entries(index, index + 1) if index >= 0 else []
    if not rows:
        raise NotFound(f"no event at index {index}")
    return JSON({"index": index, "event": orjson.loads(rows[0][1])})


@router.get("/v1/events", summary="Search events")
def search_events(
    request: Request,
    q: str = Query("", max_length=4096, description="query, e.g. action:db.* actor:alice"),
    limit: int = Query(100, ge=1, le=1000),
    cursor: int | None = Query(None, ge=0, description="next_cursor of the previous page"),
    order: Literal["newest", "oldest"] = "newest",
) -> Response:
    authorise(request, *READERS)
    node_of(request).sequencer.wait_indexed()
    query = StoreQuery(
        expr=parse_query(q), newest_first=order == "newest", limit=limit, after=cursor
    )
    rows = node_of(request).store.search(query)
    events = [{"index": i, "event": orjson.loads(data)} for i, data in rows]
    next_cursor = rows[-1][0] if len(rows) == limit else None
    return JSON({"events": events, "next_cursor": next_cursor})
