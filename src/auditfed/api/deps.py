"""What every route needs: the node, and the authenticated caller with a role check."""

from __future__ import annotations

from starlette.requests import Request

from auditfed.identity.tokens import Caller
from auditfed.node import Node

READERS = ("auditor", "admin")
WRITERS = ("source", "admin")


def node_of(request: Request) -> Node:
    return request.app.state.node


def authorise(request: Request, *roles: str) -> Caller:
    caller = node_of(request).tokens.authenticate(request.headers.get("authorization"))
    caller.require(*roles)
    return caller
