"""What every route needs: the node, and the authenticated caller with a role check."""

from __future__ import annotations

from starlette.requests import Request

from auditfed.errors import InvalidInput
from auditfed.identity.tokens import Caller
from auditfed.node import Node
from auditfed.store.filters import And, Expr, Term

#: The largest log index, tree size or cursor a request may name: the stores keep them
#: as 64-bit signed integers (issue #16: a larger one was a 500, now a 400 that the
#: OpenAPI document announces).
MAX_INDEX = 2**63 - 1

READERS = ("auditor", "admin")
WRITERS = ("source", "admin")


def log_index(name: str, value: str) -> int:
    """A log index given in a header (``Last-Event-ID``, ``Auditfed-Follows``)."""
    if not (value.isascii() and value.isdigit()) or int(value) > MAX_INDEX:
        raise InvalidInput(f"{name} must be a log index (0 to {MAX_INDEX})")
    return int(value)


def node_of(request: Request) -> Node:
    return request.app.state.node


def authorise(request: Request, *roles: str) -> Caller:
    caller = node_of(request).tokens.authenticate(request.headers.get("authorization"))
    caller.require(*roles)
    return caller


async def authorise_async(request: Request, *roles: str) -> Caller:
    """:func:`authorise` for routes on the event loop (the ingest routes, where sources
    present workload JWTs): a key fetch it needs runs in a thread."""
    caller = await node_of(request).tokens.aauthenticate(request.headers.get("authorization"))
    caller.require(*roles)
    return caller


def reader(request: Request, action: str = "audit.read", *, wait: bool = True) -> Caller:
    """An auditor or admin, whose access is itself recorded in the log.

    ``wait`` (for routes run in the thread pool): answer only once the record of
    this access is durable. Event-loop routes pass ``wait=False``.
    """
    caller = authorise(request, *READERS)
    record(request, caller, action, wait=wait)
    return caller


def record(request: Request, caller: Caller, action: str, *, wait: bool = True, **extra: object) -> None:
    details = {"method": request.method, "role": caller.role, **extra}
    if request.url.query:
        details["query"] = request.url.query[:2048]
    recorded = node_of(request).record_access(caller, action, request.url.path[:512], details)
    if wait:
        recorded.result()


def scope_filter(caller: Caller, expr: Expr | None) -> Expr | None:
    """``expr`` narrowed to what a scoped auditor may see."""
    terms: list[Expr] = []
    if caller.scoped and caller.service is not None:
        terms.append(Term("service", caller.service))
    if caller.scoped and caller.environment is not None:
        terms.append(Term("env", caller.environment))
    if not terms:
        return expr
    return And((*terms, expr)) if expr is not None else And(tuple(terms))
