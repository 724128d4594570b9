"""Running the API with uvicorn, and stopping it gracefully.

On SIGTERM or SIGINT the server stops taking new work (503 with Retry-After), lets
the requests in flight finish (at most ``shutdown_grace`` seconds), then the
lifespan shutdown lets the sequencer commit what is queued and sign a final
checkpoint. A second signal stops at once.

The listening socket is bound before anything else starts, so a port already in use
is reported at once (:class:`~auditfed.errors.ListenError`), not after the node's
start-up; ``on_ready`` runs once the server accepts connections.

Why uvicorn (httptools) with :mod:`auditfed.api.connections` guarding it: measured
with ``python -m bench.server_choice`` on 127.0.0.1 (2 shared cores): 1,000
connections trickling a header line while a client POSTs every 0.25 s for 12 s, then
50 connections each sending 4 MB of an unfinished header:

========================================  ==============  ==============  ===============
server                                    POSTs answered  slow conns      RSS, 50 x 4 MB
                                          200 (median)    after 12 s      headers
========================================  ==============  ==============  ===============
uvicorn 0.54, ``limit_concurrency=1000``  0 / 40 (503)    1,000 open      29 -> 235 MB
uvicorn 0.54 + this guard                 40 / 40 (32 ms) 0 (408 at 10 s) 78 -> 84 MB
hypercorn 0.18 (h11)                      40 / 40 (39 ms) 0               65 -> 82 MB
granian 2.8                               35 in 12 s      1,000 open      61 -> 81 MB
                                          (68 ms)
========================================  ==============  ==============  ===============

hypercorn holds too, but its pure-Python h11 parser is slower on ingest; granian kept
every slowloris connection open. uvicorn's ``limit_concurrency`` is not used: it
answers 503 to authenticated work once unauthenticated clients hold the connections.
"""

from __future__ import annotations

import errno
import logging
import resource
import socket
import threading
import time
from collections.abc import Callable
from types import FrameType

import uvicorn

from auditfed.api.app import create_app
from auditfed.api.connections import ConnectionLimits, guarded_protocol
from auditfed.config import Settings
from auditfed.errors import ListenError
from auditfed.ingest.workers import tune_garbage_collector
from auditfed.node import Node

log = logging.getLogger(__name__)


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, grace: float, on_ready: Callable[[], None] | None = None) -> None:
        super().__init__(config)
        self.grace = grace
        self.on_ready = on_ready

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.on_ready is not None and self.started:
            self.on_ready()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        state = self.config.app.state  # type: ignore[attr-defined]
        if state.draining:
            self.force_exit = True
            self.should_exit = True
            return
        state.draining = True
        log.info("draining", extra={"signal": sig, "in_flight": state.in_flight})
        threading.Thread(target=self._exit_when_idle, args=(state,), daemon=True).start()

    def _exit_when_idle(self, state: object) -> None:
        deadline = time.monotonic() + self.grace
        while state.in_flight > 0 and time.monotonic() < deadline:  # type: ignore[attr-defined]
            time.sleep(0.02)
        self.should_exit = True


#: Connections the kernel queues before the server accepts them.
BACKLOG = 4096

#: File descriptors kept apart from connections (store, logs, ingest workers' pipes).
RESERVED_FDS = 128


def raise_fd_limit() -> int:
    """Raise the soft limit on open files to the hard limit (thousands of sockets must
    not fail with EMFILE); returns the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open-file limit", extra={"soft": soft, "error": str(exc)})
    return soft


def connection_limits(settings: Settings, fd_limit: int) -> ConnectionLimits:
    cap = min(settings.max_connections, max(16, fd_limit - RESERVED_FDS))
    if cap < settings.max_connections:
        log.warning("max_connections lowered to fit the open-file limit",
                    extra={"max_connections": cap, "fd_limit": fd_limit})
    return ConnectionLimits(max_connections=cap, max_header_bytes=settings.max_header_bytes,
                            header_timeout=settings.header_timeout, body_timeout=settings.body_timeout)


def bind_listener(host: str, port: int) -> socket.socket:
    """A socket listening on ``host:port``. Listening at once (not only binding) holds
    the port: with SO_REUSEADDR, Linux lets a second socket bind a port nobody listens
    on yet. Clients connecting during start-up wait in the backlog."""
    sock: socket.socket | None = None
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(BACKLOG)
    except OSError as exc:
        if sock is not None:
            sock.close()
        fix = f"make demo PORT={port + 1}, or serve --listen {host}:{port + 1}"
        if exc.errno == errno.EADDRINUSE:
            raise ListenError(f"{host}:{port} is already in use (another auditfed?): stop that server "
                              f"or pick a free port: {fix}") from None
        raise ListenError(f"cannot listen on {host}:{port} ({exc.strerror}): pick another address: {fix}") from None
    return sock


def serve(settings: Settings, listener: socket.socket | None = None,
          on_ready: Callable[[], None] | None = None) -> None:
    """Serve on ``listener`` (bound to the settings' address if not given) until a
    signal; ``on_ready`` is called once connections are accepted."""
    listener = listener or bind_listener(settings.host, settings.port)
    limits = connection_limits(settings, raise_fd_limit())
    node = Node(settings)
    tune_garbage_collector()
    app = create_app(node)
    protocol = guarded_protocol(limits, node.metrics.registry)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http=protocol,
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=int(settings.shutdown_grace) or None,
        timeout_keep_alive=settings.keepalive_timeout,  # type: ignore[arg-type]
        backlog=BACKLOG,
    )
    DrainingServer(config, settings.shutdown_grace, on_ready).run(sockets=[listener])
