"""RFC 9457 problem details for every error the API returns."""

from __future__ import annotations

import logging
import re
from http import HTTPStatus
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from auditfed.errors import AuditfedError, InvalidEvent, Unavailable

log = logging.getLogger(__name__)

PROBLEM_TYPE = "application/problem+json"
TYPE_BASE = "https://auditfed.dev/problems/"

#: An RFC 9457 problem document as the OpenAPI document describes every error answer.
PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "detail": {"type": "string"},
    },
}


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for problem answers with these statuses."""
    return {
        status: {"description": HTTPStatus(status).phrase, "content": {PROBLEM_TYPE: {"schema": PROBLEM_SCHEMA}}}
        for status in statuses
    }


#: What any route may answer: a malformed request (400), no or an unknown token (401), a
#: role that may not (403), nothing there (404), a document that does not validate or
#: verify (422), too much load (429) or a server shutting down or overloaded (503).
COMMON_PROBLEMS = problem_responses(400, 401, 403, 404, 422, 429, 503)
#: What a route that reads a request body may answer besides: too large, or not a type it reads.
BODY_PROBLEMS = problem_responses(413, 415)


def media_response(media_type: str, description: str, schema: dict[str, Any] | None = None) -> dict[int | str, Any]:
    """An OpenAPI ``responses`` entry for a 200 answer in a media type other than JSON."""
    return {200: {"description": description, "content": {media_type: {"schema": schema or {"type": "string"}}}}}


def problem(status: int, title: str, detail: str, **extensions: Any) -> Response:
    body: dict[str, Any] = {
        "type": TYPE_BASE + re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-"),
        "title": title,
        "status": status,
        "detail": detail,
        **extensions,
    }
    headers = {"Retry-After": "1"} if status in (429, 503) else None
    return Response(orjson.dumps(body), status, headers=headers, media_type=PROBLEM_TYPE)


def problem_for(exc: AuditfedError) -> Response:
    extensions = dict(exc.extensions)
    if isinstance(exc, InvalidEvent):
        extensions["errors"] = exc.errors
    return problem(exc.status, exc.title, exc.detail, **extensions)


def install(app: FastAPI) -> None:
    @app.exception_handler(AuditfedError)
    async def on_auditfed_error(request: Request, exc: AuditfedError) -> Response:
        if isinstance(exc, Unavailable):
            log.warning("unavailable", extra={"path": request.url.path, "detail": exc.detail})
        return problem_for(exc)

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(request: Request, exc: RequestValidationError) -> Response:
        errors = [
            {"path": ".".join(str(p) for p in e["loc"]), "reason": e["msg"]} for e in exc.errors()
        ]
        first = errors[0] if errors else {"path": "", "reason": "invalid request"}
        return problem(
            400, "Invalid input", f"{first['path']}: {first['reason']}", errors=errors
        )

    @app.exception_handler(HTTPException)
    async def on_http_error(request: Request, exc: HTTPException) -> Response:
        titles = {404: "Not found", 405: "Method not allowed"}
        return problem(exc.status_code, titles.get(exc.status_code, "HTTP error"), str(exc.detail))

    @app.exception_handler(ClientDisconnect)
    async def on_disconnect(request: Request, exc: ClientDisconnect) -> Response:
        # The client left (or its body timed out, see api.connections) mid-body: nobody
        # reads this answer, and it is no server error.
        log.debug("client disconnected", extra={"path": request.url.path})
        return problem(400, "Client disconnected", "the request body did not arrive in full")

    @app.exception_handler(Exception)
    async def on_unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error", extra={"path": request.url.path})
        return problem(500, "Internal error", "an unexpected error occurred; see the server log")
