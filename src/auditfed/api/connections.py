"""Connection-level limits for the HTTP/1.1 server: header size, header and body read
timeouts, and a connection cap that sheds unauthenticated connections first.

uvicorn's ``limit_concurrency`` answers 503 to *every* request once that many
connections are open, so a thousand clients trickling a header line (slowloris, no
token needed) kept authenticated ingest out. Instead, :class:`GuardedProtocol` (a
subclass of uvicorn's httptools protocol) tracks each connection's phase:

- **head**: the request line and headers are still arriving. No request on such a
  connection has been authenticated yet. The head may be at most ``max_header_bytes``
  (else ``431`` and close, before the bytes reach the parser, so memory stays bounded)
  and must be complete within ``header_timeout`` seconds of the connection opening or
  the request's first byte (else ``408`` and close).
- **body**: headers are in and a request body is still arriving; it must be complete
  within ``body_timeout`` seconds (else the connection is closed).
- **idle keep-alive**: between requests; uvicorn closes it after ``timeout_keep_alive``.

Past ``max_connections`` open connections, a new connection makes the server close
the connection that has waited longest for its head (then the oldest idle keep-alive
one); a connection whose request is being served is never shed. If none can be shed,
the new connection is closed. Deadlines are checked by one sweep per second over
lists kept in arrival order, not one timer per request, so the guard costs ingest
next to nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, ClassVar

import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger(__name__)

#: Seconds between two sweeps for expired deadlines.
SWEEP_INTERVAL = 1.0


@dataclass
class ConnectionLimits:
    max_connections: int
    max_header_bytes: int
    header_timeout: float
    body_timeout: float


@dataclass
class ConnectionGuard:
    """The server-wide state shared by every connection's protocol."""

    limits: ConnectionLimits
    #: connections the guard closed, by reason (``auditfed_connections_closed_total``)
    closed: Counter
    #: connections waiting for their request head, oldest first, with their deadline
    heads: OrderedDict[GuardedProtocol, float] = field(default_factory=OrderedDict)
    #: connections receiving a request body, oldest first, with their deadline
    bodies: OrderedDict[GuardedProtocol, float] = field(default_factory=OrderedDict)
    #: idle keep-alive connections, oldest first
    idle: OrderedDict[GuardedProtocol, None] = field(default_factory=OrderedDict)
    open: int = 0
    sweeping: bool = False

    def sweep(self, loop: asyncio.AbstractEventLoop, due: float) -> None:
        now = loop.time()
        # A late sweep means the loop itself was busy: bytes that clients sent meanwhile
        # may be unread yet, so deadlines are enforced from the next sweep on.
        if now - due < SWEEP_INTERVAL:
            for waiting, status in ((self.heads, 408), (self.bodies, 0)):
                while waiting:
                    protocol, deadline = next(iter(waiting.items()))
                    if deadline > now:
                        break
                    protocol.reject(status, "the request was not received in time",
                                    "header_timeout" if status else "body_timeout")
        if self.open:
            self.schedule(loop)
        else:
            self.sweeping = False

    def schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        self.sweeping = True
        loop.call_later(SWEEP_INTERVAL, self.sweep, loop, loop.time() + SWEEP_INTERVAL)

    def make_room(self) -> bool:
        """Close the oldest unauthenticated or idle connection; False if there is none."""
        for waiting in (self.heads, self.idle):
            if waiting:
                victim = next(iter(waiting))
                victim.reject(503, "the server has too many open connections", "shed")
                return True
        return False


def guarded_protocol(limits: ConnectionLimits, registry: CollectorRegistry) -> type[GuardedProtocol]:
    """A protocol class for ``uvicorn.Config(http=...)`` bound to one guard."""
    closed = Counter("auditfed_connections_closed", "Connections closed by the connection limits",
                     ["reason"], registry=registry)
    guard = ConnectionGuard(limits, closed)
    Gauge("auditfed_connections_open", "Open HTTP connections", registry=registry).set_function(lambda: guard.open)
    return type("GuardedProtocol", (GuardedProtocol,), {"guard": guard})


class GuardedProtocol(HttpToolsProtocol):
    guard: ClassVar[ConnectionGuard]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: bytes of the request head being read (None: not reading a head)
        self.head_bytes: int | None = 0
        self.rejected = False

    # --- connection lifecycle ---
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        guard = self.guard
        guard.open += 1
        if not guard.sweeping:
            guard.schedule(self.loop)
        if guard.open > guard.limits.max_connections and not guard.make_room():
            self.reject(503, "the server has too many open connections", "over_limit")
            return
        self._await_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self.guard.open -= 1
        self._leave_phases()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.rejected:
            return
        self.guard.idle.pop(self, None)
        limit = self.guard.limits.max_header_bytes
        if self.head_bytes is not None:
            # Counted before parsing: the parser and uvicorn buffer an unfinished head.
            allowed = limit - self.head_bytes
            self.head_bytes += len(data)
            if len(data) > allowed:
                # The head must end within the limit; what follows it (a body) may not.
                super().data_received(data[:allowed])
                if self.head_bytes is not None:
                    self.reject(431, f"the request head is larger than {limit} bytes", "header_too_large")
                    return
                data = data[allowed:]
        if not self.transport.is_closing():
            super().data_received(data)

    # --- parser callbacks: phase changes ---
    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self.head_bytes is None:
            # The next request on a kept-alive connection: counted from its next read
            # (the one this byte came in is already within the server's read size).
            self.head_bytes = 0
        if self not in self.guard.heads:
            self.guard.heads[self] = self.loop.time() + self.guard.limits.header_timeout

    def on_headers_complete(self) -> None:
        self.head_bytes = None
        self.guard.heads.pop(self, None)
        super().on_headers_complete()
        if self.parser is not None and not self.rejected:
            self.guard.bodies[self] = self.loop.time() + self.guard.limits.body_timeout

    def on_message_complete(self) -> None:
        self.guard.bodies.pop(self, None)
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and not self.pipeline and self not in self.guard.heads:
            self.guard.idle[self] = None

    # --- helpers ---
    def _await_head(self) -> None:
        self.head_bytes = 0
        self.guard.heads[self] = self.loop.time() + self.guard.limits.header_timeout

    def _leave_phases(self) -> None:
        self.guard.heads.pop(self, None)
        self.guard.bodies.pop(self, None)
        self.guard.idle.pop(self, None)

    def reject(self, status: int, detail: str, reason: str) -> None:
        """Answer ``status`` (if no response has started; 0: none) and close."""
        log.debug("connection closed", extra={"client": self.client, "status": status, "reason": reason})
        self.guard.closed.labels(reason).inc()
        self.rejected = True
        self._leave_phases()
        if self.transport.is_closing():
            return
        if status and (self.cycle is None or not self.cycle.response_started):
            self.transport.write(_raw_problem(status, detail))
        self.transport.close()


_TITLES = {408: "Request Timeout", 431: "Request Header Fields Too Large", 503: "Service Unavailable"}


def _raw_problem(status: int, reason: str) -> bytes:
    """A minimal RFC 9457 answer written straight to the socket (no app involved)."""
    title = _TITLES[status]
    body = orjson.dumps({"type": "about:blank", "title": title, "status": status, "detail": reason})
    retry = "retry-after: 1\r\n" if status == 503 else ""
    return (f"HTTP/1.1 {status} {title}\r\ncontent-type: application/problem+json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n{retry}\r\n").encode() + body
