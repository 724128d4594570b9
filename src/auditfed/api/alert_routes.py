"""Alerts: list, stream (server-sent events), acknowledge and close.

Alerts come from the live detection (:mod:`auditfed.detect.service`); each is also an
``alert.raised`` event in the log. Reading needs an ``auditor`` or ``admin`` token
whose reads are themselves logged; an auditor scoped to one service or environment
is refused, because an alert's events may span several. Acknowledging and closing
(with a note) are logged as ``alert.acknowledged`` / ``alert.closed`` events before
the answer.

The stream (``text/event-stream``, W3C server-sent events) sends each new alert as
``event: alert``, ``id: <log index of its alert.raised event>``, ``data: <alert
JSON>``; a client reconnecting with ``Last-Event-ID`` first gets the alerts it
missed. Comments keep idle connections alive. Open streams are limited per token
(``max_streams_per_token``) and in all (``max_streams``): past either, 429 with
Retry-After, so one token cannot hold the server's connections.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any, Literal

import orjson
from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from auditfed.api.deps import MAX_INDEX, READERS, authorise, log_index, node_of, record
from auditfed.api.problems import media_response
from auditfed.api.responses import JSON, DecodedBodyRoute
from auditfed.detect.service import DetectionService, alert_document
from auditfed.errors import Forbidden, NotFound, TooManyRequests, Unavailable
from auditfed.identity.tokens import Caller

router = APIRouter(tags=["alerts"], route_class=DecodedBodyRoute)

Status = Literal["open", "acknowledged", "closed"]
Level = Literal["informational", "low", "medium", "high", "critical"]

#: Seconds between keep-alive comments on an idle stream.
KEEPALIVE = 15.0
#: Alerts sent to a reconnecting client at most (the rest: page GET /v1/alerts).
CATCH_UP_LIMIT = 1000


class StreamSlots:
    """Open alert streams, per token and in all, within the configured limits."""

    def __init__(self, total: int, per_token: int) -> None:
        self.total, self.per_token = total, per_token
        self.open: Counter[str] = Counter()

    def acquire(self, token_id: str) -> None:
        if self.open.total() >= self.total:
            raise TooManyRequests(f"the server has {self.total} alert streams open (max_streams); "
                                  "retry later or page GET /v1/alerts")
        if self.open[token_id] >= self.per_token:
            raise TooManyRequests(f"this token has {self.per_token} alert streams open "
                                  "(max_streams_per_token); close one first")
        self.open[token_id] += 1

    def release(self, token_id: str) -> None:
        self.open[token_id] -= 1
        if self.open[token_id] <= 0:
            del self.open[token_id]


def _slots(request: Request) -> StreamSlots:
    state = request.app.state
    slots = getattr(state, "stream_slots", None)
    if slots is None:
        settings = node_of(request).settings
        slots = state.stream_slots = StreamSlots(settings.max_streams, settings.max_streams_per_token)
    return slots


class SlotStream(StreamingResponse):
    """A streaming response that gives its slot back however the stream ends."""

    def __init__(self, *args: Any, release: Callable[[], None], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.release = release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.release()


def _auditor(request: Request, action: str, *, wait: bool) -> Caller:
    caller = authorise(request, *READERS)
    if caller.scoped:
        raise Forbidden("alerts span services and environments: this needs an unscoped "
                        "auditor or admin token")
    record(request, caller, action, wait=wait)
    return caller


def _service(request: Request) -> DetectionService:
    service = node_of(request).detection
    if service is None:
        raise Unavailable("alerts are not available yet")
    return service


@router.get("/v1/alerts", summary="List alerts, newest first")
def list_alerts(
    request: Request,
    status: Status | None = Query(None),
    rule_id: str | None = Query(None, max_length=256),
    level: Level | None = Query(None),
    before: int | None = Query(None, ge=0, le=MAX_INDEX, description="page: alerts raised before this log index"),
    limit: int = Query(100, ge=1, le=1000),
) -> Response:
    _auditor(request, "audit.alerts.read", wait=True)
    alerts = node_of(request).store.list_alerts(
        status=status, rule_id=rule_id, level=level, before=before, limit=limit)
    return JSON({
        "alerts": [alert_document(a) for a in alerts],
        "next_before": alerts[-1].log_index if len(alerts) == limit else None,
    })


@router.get("/v1/alerts/stream", summary="New alerts as server-sent events", response_class=Response,
            responses=media_response("text/event-stream", "one alert per event, comments as keep-alives"))
async def stream_alerts(
    request: Request,
    level: Level | None = Query(None, description="only alerts of this level or above"),
    rule_id: str | None = Query(None, max_length=256),
) -> Response:
    caller = _auditor(request, "audit.alerts.stream", wait=False)
    service = _service(request)
    last = request.headers.get("last-event-id")
    since = log_index("Last-Event-ID", last) if last else None
    levels = ("informational", "low", "medium", "high", "critical")
    minimum = levels.index(level) if level else 0

    def wanted(document: dict[str, Any]) -> bool:
        rank = levels.index(document["level"]) if document.get("level") in levels else 0
        return rank >= minimum and (rule_id is None or document["rule_id"] == rule_id)

    state = request.app.state
    store = node_of(request).store
    slots = _slots(request)
    slots.acquire(caller.token_id)  # 429 past the per-token or global limit
    try:
        subscription = service.stream.subscribe()  # before catching up: nothing falls between
        if since is None:
            newest = await run_in_threadpool(store.list_alerts, limit=1)
            since = newest[0].log_index if newest else -1
    except BaseException:
        slots.release(caller.token_id)
        raise

    async def frames() -> AsyncIterator[bytes]:
        sent = since
        try:
            yield b"retry: 2000\n: auditfed alert stream\n\n"
            idle_since = time.monotonic()
            poll = True  # catch up from the store first
            while True:
                if poll:
                    # Alerts raised elsewhere (after a reconnect; on a cluster node that
                    # does not lead, detection runs on the leader) come from the store.
                    for alert in await run_in_threadpool(store.list_alerts, after=sent,
                                                         limit=CATCH_UP_LIMIT):
                        document = alert_document(alert)
                        if wanted(document):
                            idle_since = time.monotonic()
                            yield _frame(document)
                        sent = max(sent, alert.log_index)
                try:
                    document = await asyncio.wait_for(subscription.get(), 1.0)
                except TimeoutError:
                    if state.draining:
                        return
                    if time.monotonic() - idle_since >= KEEPALIVE:
                        idle_since = time.monotonic()
                        yield b": keep-alive\n\n"
                    poll = not service.started or node_of(request).detection is not service
                    continue
                poll = False
                if document is None:
                    return
                if document["log_index"] <= sent or not wanted(document):
                    continue
                sent = document["log_index"]
                idle_since = time.monotonic()
                yield _frame(document)
        finally:
            service.stream.unsubscribe(subscription)

    return SlotStream(
        frames(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        release=lambda: slots.release(caller.token_id),
    )


def _frame(document: dict[str, Any]) -> bytes:
    return (b"event: alert\nid: " + str(document["log_index"]).encode() + b"\ndata: "
            + orjson.dumps(document) + b"\n\n")


@router.get("/v1/alerts/{alert_id}", summary="One alert")
def get_alert(request: Request, alert_id: str) -> Response:
    _auditor(request, "audit.alerts.read", wait=True)
    alert = node_of(request).store.get_alert(alert_id)
    if alert is None:
        raise NotFound(f"no alert {alert_id}")
    return JSON(alert_document(alert))


class Note(BaseModel):
    model_config = ConfigDict(extra="forbid")

    note: str = Field(min_length=1, max_length=4096, description="why: what was checked or done")


@router.post("/v1/alerts/{alert_id}/acknowledge", summary="Acknowledge an alert with a note (logged)")
def acknowledge(request: Request, alert_id: str, body: Note) -> Response:
    return _change(request, alert_id, "acknowledge", body.note)


@router.post("/v1/alerts/{alert_id}/close", summary="Close an alert with a note (logged)")
def close(request: Request, alert_id: str, body: Note) -> Response:
    return _change(request, alert_id, "close", body.note)


def _change(request: Request, alert_id: str, action: str, note: str) -> Response:
    caller = authorise(request, *READERS)
    if caller.scoped:
        raise Forbidden("this needs an unscoped auditor or admin token")
    updated = _service(request).change_status(alert_id, action, note, caller)
    return JSON(alert_document(updated))
