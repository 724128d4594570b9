"""Fast JSON responses (orjson) and request bodies read within a size limit.

Every body goes through one decoding path: :func:`read_body` (the size limit),
:func:`auditfed.ingest.body.inflate` (Content-Encoding: every gzip member, nothing
after them) and :func:`auditfed.event.strict_json.loads` (JSON under I-JSON). Ingest
bodies are inflated and parsed in the ingest workers (:mod:`auditfed.ingest.pipeline`);
routes whose body FastAPI validates into a model use :class:`DecodedBodyRoute`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import orjson
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Scope

from auditfed.errors import InvalidInput, PayloadTooLarge
from auditfed.event import strict_json
from auditfed.ingest.body import inflate


class JSON(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


async def read_body(request: Request, limit: int) -> bytes:
    """The raw body, refused with 413 as soon as it passes ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise PayloadTooLarge(f"the body is larger than the limit of {limit} bytes")
        except ValueError:
            raise InvalidInput("Content-Length is not a number") from None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"the body is larger than the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def read_decoded_body(request: Request, limit: int) -> bytes:
    """:func:`read_body` with the Content-Encoding undone (off the event loop)."""
    body = await read_body(request, limit)
    encoding = request.headers.get("content-encoding")
    if encoding is None or encoding.strip().lower() in ("", "identity"):
        return body
    return await asyncio.to_thread(inflate, body, encoding, limit)


class DecodedBodyRoute(APIRoute):
    """A route whose JSON body FastAPI validates into a model, read as ingest reads:
    ``max_body_bytes``, gzip, and I-JSON (duplicate names and deep nesting are a 400
    before the model sees the body).

    Every such route needs a token, and the caller must present a valid one before
    the body is read at all (the route then checks the role): an unauthenticated
    client cannot make the server read, inflate or parse a body.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        if self.body_field is None:
            return handler

        async def decoded(request: Request) -> Response:
            node = request.app.state.node
            await asyncio.to_thread(node.tokens.authenticate, request.headers.get("authorization"))
            body = await read_decoded_body(request, node.settings.max_body_bytes)
            return await handler(_DecodedRequest(request.scope, body, _json_of(request, body)))

        return decoded


def _json_of(request: Request, body: bytes) -> Any:
    media_type = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    if not body or not (media_type == "application/json" or media_type.endswith("+json")):
        return None  # FastAPI answers for a missing or non-JSON body
    try:
        return strict_json.loads(body)
    except orjson.JSONDecodeError as exc:  # NotIJSON included
        raise InvalidInput(f"the body is not valid I-JSON: {exc}") from None


class _DecodedRequest(Request):
    """The request with its body already read, inflated and parsed."""

    def __init__(self, scope: Scope, body: bytes, value: Any) -> None:
        super().__init__(scope)
        self._decoded_body = body
        self._decoded_value = value

    async def body(self) -> bytes:
        return self._decoded_body

    async def json(self) -> Any:
        return self._decoded_value
