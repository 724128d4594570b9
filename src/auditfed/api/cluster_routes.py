"""Finding an acknowledged event, and the state of the nodes sharing a log.

On a cluster (:mod:`auditfed.ingest.cluster`) a node may acknowledge an event before
the leader has given it an index (``"index": null, "sequenced": false``).
``GET /v1/events/by-id`` tells its producer (or an auditor) where it ended up: its
index and an RFC 9162 inclusion proof against the latest signed checkpoint, or
``pending`` while it waits for the leader. It works the same on a single SQLite node.
"""

from __future__ import annotations

import base64

import orjson
from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from auditfed.api.deps import READERS, authorise, node_of, record
from auditfed.api.responses import JSON
from auditfed.errors import Forbidden, NotFound
from auditfed.ledger import inclusion_proof
from auditfed.query.reading import exact_term
from auditfed.store.filters import And
from auditfed.store.filters import Query as StoreQuery

router = APIRouter()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@router.get("/v1/events/by-id", tags=["query"], summary="Where an acknowledged event is in the log")
def event_by_id(
    request: Request,
    service: str = Query(min_length=1, max_length=512, description="the event's source.service"),
    id: str = Query(min_length=1, max_length=1024, description="the event's id"),
) -> Response:
    """``{"status": "sequenced", "index", "checkpoint_size", "hashes"}`` (the inclusion
    proof in the latest checkpoint, ``null`` until a checkpoint covers the entry) or
    ``{"status": "pending"}``. A ``source`` token may ask about its own service only."""
    caller = authorise(request, "source", *READERS)
    if caller.role == "source" and caller.service != service:
        raise Forbidden(f"a source token of {caller.service!r} cannot look up {service!r}")
    if caller.role in READERS:
        record(request, caller, "audit.event.locate")
    node = node_of(request)
    expr = And((exact_term("service", service), exact_term("id", id)))
    rows = node.store.search(StoreQuery(expr, limit=1))
    if not rows:
        node.sequencer.wait_indexed()
        rows = node.store.search(StoreQuery(expr, limit=1))
    if not rows:
        lookup = getattr(node.store, "lookup_pending", None)
        if lookup is not None and lookup(service, id):
            return JSON({"service": service, "id": id, "status": "pending", "index": None})
        raise NotFound(f"no event {id!r} of {service!r} in the log")
    index, data = rows[0]
    if caller.role in READERS and not caller.may_see(orjson.loads(data)):
        raise NotFound(f"no event {id!r} of {service!r} in this token's scope")
    latest = node.sequencer.latest_checkpoint
    body: dict[str, object] = {"service": service, "id": id, "status": "sequenced", "index": index,
                               "checkpoint_size": None, "hashes": None}
    if latest is not None and latest.size > index:
        body["checkpoint_size"] = latest.size
        body["hashes"] = [_b64(h) for h in inclusion_proof(index, latest.size, node.store)]
    return JSON(body)


@router.get("/v1/cluster/status", tags=["ops"], summary="Leader, unsequenced events and nodes")
def cluster_status(request: Request) -> Response:
    caller = authorise(request, *READERS)
    record(request, caller, "audit.cluster.status")
    return JSON(describe(node_of(request)))


def describe(node: object) -> dict[str, object]:
    """The cluster as this node sees it; a single SQLite node describes itself."""
    sequencer = node.sequencer  # type: ignore[attr-defined]
    status = getattr(sequencer, "status", None)
    if status is not None:
        return status()
    latest = sequencer.latest_checkpoint
    name = node.settings.node_name or node.settings.listen  # type: ignore[attr-defined]
    return {
        "store": "sqlite",
        "leader": name,
        "size": sequencer.size,
        "indexed_size": sequencer.indexed_size,
        "checkpoint": latest.size if latest else None,
        "pending": 0,
        "nodes": [{"node": name, "address": node.settings.listen, "role": "leader",  # type: ignore[attr-defined]
                   "size": sequencer.size}],
    }
