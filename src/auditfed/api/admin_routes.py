"""Token management (admin) and the service's own health, metrics and schema."""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime, timedelta

from fastapi import APIRouter, Request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from auditfed.api.deps import authorise, node_of, record
from auditfed.api.problems import media_response
from auditfed.api.responses import JSON, DecodedBodyRoute
from auditfed.defaults import MAX_TOKEN_SECONDS
from auditfed.errors import NotFound
from auditfed.event import event_json_schema
from auditfed.ingest.meta import token_details

router = APIRouter(route_class=DecodedBodyRoute)


class TokenRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: str = Field(pattern="^(source|auditor|admin)$")
    service: str | None = Field(None, min_length=1, max_length=512)
    environment: str | None = Field(None, min_length=1, max_length=512)
    description: str | None = Field(None, max_length=1024)
    expires_in_seconds: int | None = Field(None, gt=0, le=MAX_TOKEN_SECONDS, description="at most 100 years")


@router.post("/v1/tokens", tags=["admin"], summary="Create a bearer token", status_code=201)
def create_token(request: Request, body: TokenRequest) -> Response:
    caller = authorise(request, "admin")
    expires = (
        datetime.now(UTC) + timedelta(seconds=body.expires_in_seconds)
        if body.expires_in_seconds else None
    )
    token, record_of = node_of(request).tokens.create(
        body.role, service=body.service, environment=body.environment,
        description=body.description, expires_at=expires,
    )
    record(request, caller, "admin.token.create", **token_details(record_of))
    return JSON({"token": token, **asdict(record_of)}, status_code=201)


@router.get("/v1/tokens", tags=["admin"], summary="List tokens (never their secret)")
def list_tokens(request: Request) -> Response:
    caller = authorise(request, "admin")
    record(request, caller, "admin.token.list")
    return JSON({"tokens": [asdict(r) for r in node_of(request).tokens.list()]})


@router.delete("/v1/tokens/{token_id}", tags=["admin"], summary="Revoke a token", status_code=204)
def revoke_token(request: Request, token_id: str) -> Response:
    caller = authorise(request, "admin")
    revoked = node_of(request).tokens.revoke(token_id)
    if revoked is None:
        raise NotFound(f"no active token {token_id}")
    record(request, caller, "admin.token.revoke", **token_details(revoked))
    return Response(status_code=204)


@router.get("/v1/schema/event", tags=["schema"], summary="The event's JSON Schema",
            response_class=Response,
            responses=media_response("application/schema+json", "JSON Schema (2020-12)", {"type": "object"}))
def get_event_schema() -> Response:
    return JSON(event_json_schema(), media_type="application/schema+json")


@router.get("/healthz", tags=["ops"])
def healthz(request: Request) -> Response:
    node = node_of(request)
    latest = node.sequencer.latest_checkpoint
    return JSON({
        "status": "draining" if request.app.state.draining else "ok",
        "origin": node.origin,
        "size": node.sequencer.size,
        "checkpoint": latest.size if latest else None,
    })


@router.get("/metrics", tags=["ops"], response_class=Response,
            responses=media_response("text/plain", "Prometheus text exposition"))
def metrics(request: Request) -> Response:
    return Response(
        generate_latest(node_of(request).metrics.registry), media_type=CONTENT_TYPE_LATEST
    )
