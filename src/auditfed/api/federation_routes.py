"""Federation endpoints: node enrolment, the node-to-hub protocol, the witness key, status.

- ``GET  /v1/federation/witness-key`` — the hub's witness verifier key (public)
- ``POST /v1/federation/nodes`` — enrol a node (admin): ``{"name", "key"}`` -> a node token
- ``GET  /v1/federation/nodes`` — enrolled nodes and what the hub verified (auditor, admin)
- ``GET  /v1/federation/nodes/{name}/position`` — where the node's log stands at the hub
  (that node's token, auditor, admin)
- ``POST /v1/federation/nodes/{name}/entries`` — a batch (that node's token only;
  ``Auditfed-Follows`` when sent before the previous batch is answered)
- ``POST /v1/federation/nodes/{name}/reinstate`` — lift a refusal (admin)
- ``GET  /v1/federation/status`` — this server as a node and as a hub (auditor, admin)
- ``GET  /v1/federation/checkpoint`` — the latest cosigned checkpoint with its cosignatures
  (public, like ``/v1/log/checkpoint``; also ``/v1/log/checkpoint?cosigned=1``)

The protocol is in :mod:`auditfed.federation.protocol`.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import PlainTextResponse, Response

from auditfed.api.deps import READERS, authorise, log_index, node_of, record
from auditfed.api.problems import BODY_PROBLEMS
from auditfed.api.responses import JSON, DecodedBodyRoute, read_decoded_body
from auditfed.errors import Forbidden
from auditfed.federation.hub import enrol_node, node_summary, reinstate_node
from auditfed.federation.protocol import FOLLOWS_HEADER
from auditfed.federation.service import cosigned_checkpoint
from auditfed.identity.tokens import Caller

router = APIRouter(tags=["federation"], route_class=DecodedBodyRoute)


def _node_or_reader(request: Request, name: str) -> Caller:
    caller = authorise(request, "node", *READERS)
    if caller.role == "node" and caller.service != name:
        raise Forbidden(f"this node token belongs to {caller.service!r}, not {name!r}")
    return caller


class Enrolment(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=64)
    key: str = Field(min_length=1, max_length=1024, description="the node's log verifier key")


class Reinstatement(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rebaseline: bool = False


@router.get("/v1/federation/witness-key", summary="The hub's witness verifier key", response_class=PlainTextResponse)
def get_witness_key(request: Request) -> Response:
    return PlainTextResponse(node_of(request).federation.hub.witness_key() + "\n")


@router.get("/v1/federation/checkpoint", summary="The latest cosigned checkpoint", response_class=PlainTextResponse)
def get_cosigned_checkpoint(request: Request) -> Response:
    note = cosigned_checkpoint(node_of(request).store)
    return PlainTextResponse(note, headers={"Cache-Control": "no-store"})


@router.post("/v1/federation/nodes", summary="Enrol a node (admin)", status_code=201)
def post_node(request: Request, body: Enrolment) -> Response:
    caller = authorise(request, "admin")
    token, enrolled = enrol_node(node_of(request).store, body.name, body.key)
    record(request, caller, "admin.federation.enrol", node=body.name, key=enrolled.key)
    return JSON({"token": token, **node_summary(enrolled)}, status_code=201)


@router.get("/v1/federation/nodes", summary="Enrolled nodes")
def get_nodes(request: Request) -> Response:
    caller = authorise(request, *READERS)
    record(request, caller, "audit.federation.nodes")
    return JSON({"nodes": [node_summary(r) for r in node_of(request).store.federation_nodes()]})


@router.get("/v1/federation/nodes/{name}/position", summary="A node's acknowledged position")
def get_position(request: Request, name: str) -> Response:
    _node_or_reader(request, name)
    return JSON(node_of(request).federation.hub.position(name))


@router.post("/v1/federation/nodes/{name}/entries", summary="Forward a batch of node entries",
             responses=BODY_PROBLEMS)
async def post_entries(request: Request, name: str) -> Response:
    caller = authorise(request, "node")
    if caller.service != name:
        raise Forbidden(f"this node token belongs to {caller.service!r}, not {name!r}")
    node = node_of(request)
    body = await read_decoded_body(request, node.settings.max_body_bytes)
    return JSON(await node.federation.hub.receive(name, body, _follows(request)))


def _follows(request: Request) -> int | None:
    value = request.headers.get(FOLLOWS_HEADER)
    return None if value is None else log_index(FOLLOWS_HEADER, value)


@router.post("/v1/federation/nodes/{name}/reinstate", summary="Reinstate a refused node (admin)")
def post_reinstate(request: Request, name: str, body: Reinstatement | None = None) -> Response:
    caller = authorise(request, "admin")
    rebaseline = bool(body and body.rebaseline)
    reinstated = reinstate_node(node_of(request).store, name, rebaseline=rebaseline)
    record(request, caller, "admin.federation.reinstate", node=name, rebaseline=rebaseline)
    return JSON(node_summary(reinstated))


@router.get("/v1/federation/status", summary="Federation status of this server")
def get_status(request: Request) -> Response:
    authorise(request, *READERS)
    return JSON(node_of(request).federation.status())
