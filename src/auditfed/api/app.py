"""The ASGI application: routes, problem handlers, draining, background tasks."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from auditfed import __version__
from auditfed.api import (
    admin_routes,
    alert_routes,
    answer_routes,
    cluster_routes,
    federation_routes,
    ingest_routes,
    log_routes,
    problems,
    query_routes,
    source_routes,
)
from auditfed.api.problems import COMMON_PROBLEMS, problem
from auditfed.node import Node

log = logging.getLogger(__name__)


class Draining:
    """Counts requests in flight; once draining, new requests get 503 + Retry-After."""

    def __init__(self, app: ASGIApp, state: object) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = self.state
        if state.draining:  # type: ignore[attr-defined]
            response = problem(503, "Service unavailable", "the server is shutting down")
            response.headers["Connection"] = "close"
            await response(scope, receive, send)
            return
        state.in_flight += 1  # type: ignore[attr-defined]
        try:
            await self.app(scope, receive, send)
        finally:
            state.in_flight -= 1  # type: ignore[attr-defined]


async def _publish_checkpoints(node: Node) -> None:
    """Sign a checkpoint at least once per interval while the log grows."""
    interval = node.settings.checkpoint_interval
    while True:
        await asyncio.sleep(interval)
        latest = node.sequencer.latest_checkpoint
        if latest is None or node.sequencer.size > latest.size:
            try:
                await node.sequencer.checkpoint()
            except Exception:
                log.exception("checkpoint failed")


#: Seconds between two applications of the ``retention`` setting.
RETENTION_INTERVAL = 3600.0


async def _apply_retention(node: Node, older_than: timedelta) -> None:
    """Remove entries past ``older_than`` at start, then every RETENTION_INTERVAL."""
    while True:
        try:
            await asyncio.to_thread(node.apply_retention, older_than)
        except Exception:
            log.exception("retention failed; retrying at the next interval")
        await asyncio.sleep(RETENTION_INTERVAL)


def create_app(node: Node, *, start_node: bool = True) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if start_node:
            node.start()
        tasks = [asyncio.create_task(_publish_checkpoints(node), name="checkpoints")]
        if node.retention is not None:
            tasks.append(asyncio.create_task(_apply_retention(node, node.retention), name="retention"))
        if node.settings.demo:
            from auditfed.demo import feed_demo_events

            tasks.append(asyncio.create_task(feed_demo_events(node), name="demo"))
        log.info("serving", extra={"origin": node.origin, "size": node.sequencer.size})
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if start_node:
                node.close()

    app = FastAPI(
        title="auditfed",
        version=__version__,
        summary="One provable audit trail across services, data stores, pipelines and clouds.",
        lifespan=lifespan,
        responses=COMMON_PROBLEMS,
    )
    app.state.node = node
    app.state.draining = False
    app.state.in_flight = 0
    problems.install(app)
    app.include_router(cluster_routes.router)  # before /v1/events/{index}
    for module in (ingest_routes, log_routes, query_routes, admin_routes):
        app.include_router(module.router)
    app.include_router(source_routes.router)
    app.include_router(alert_routes.router)
    app.include_router(federation_routes.router)
    app.include_router(answer_routes.router)
    app.add_middleware(Draining, state=app.state)
    return app
