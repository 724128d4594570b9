"""Detection on the live log: the engine behind the sequencer, alerts and their sinks.

:class:`DetectionService` subscribes to the sequencer's commits with a listener that
only queues the committed rows (the log writer never waits on detection). A worker
thread runs every event, in log order, through the
:class:`~auditfed.detect.engine.DetectionEngine`; a second thread raises what it
matched (so the engine never waits for storage, and alerts that queue meanwhile
share one write). An alert is

1. appended to the log as an ``alert.raised`` event (through the same prepare +
   sequencer path as any event; its id is derived from the log's origin and the
   alert's deterministic dedup key, so raising it again after a crash finds the
   same log entry instead of adding one),
2. handed to every webhook sender at once, while it is stored together with its
   webhook deliveries in the durable outbox (one store transaction; at most one
   alert per dedup key),
3. written to the server log (one structured line) and published to the
   ``GET /v1/alerts/stream`` subscribers.

Webhooks get the alert as JSON signed per Standard Webhooks (``webhook-id``,
``webhook-timestamp``, ``webhook-signature``; see :mod:`auditfed.detect.webhooks`),
retried with exponential backoff from the outbox until a 2xx answer, across
restarts. Delivery is at least once: every attempt of one alert's delivery, even
across a crash, carries the same ``webhook-id`` (also sent as ``X-Auditfed-Delivery``)
for receivers to deduplicate. A webhook URL is shown (logs, thread names, recorded
errors) only through :func:`~auditfed.safeurl.redact_url`: it may hold credentials.

Restarts. The store keeps a watermark: every event below it has been processed and
its alerts stored. At start the service rebuilds the correlation windows by
replaying (without raising) the log's tail of ``engine.replay_seconds`` of event time
before the watermark (at most ``MAX_REPLAY_EVENTS``), then processes the events from
the watermark on like live ones, raising only alerts whose keys are not stored. So a
restart, even a crash in the middle of a correlation window, neither misses nor
repeats an alert.

Auditfed's own ``alert.*`` events are never run through the rules (no alert loops).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import queue
import random
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx
import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge

from auditfed import __version__
from auditfed.batches import handle_batches
from auditfed.config import Settings
from auditfed.detect.correlation import parse_time
from auditfed.detect.webhooks import HostAllowList, legacy_signature, signing_key, standard_signature
from auditfed.errors import AuditfedError, ConfigError, NotFound
from auditfed.event.model import format_time
from auditfed.federation.envelope import FIELD as FEDERATION_FIELD
from auditfed.identity.tokens import Caller
from auditfed.ingest.prepare import prepare_event
from auditfed.ingest.sequencer import Sequencer
from auditfed.safeurl import redact_url, scrub
from auditfed.store.base import AlertRecord, DeliveryRecord, EntryRow, Store

if TYPE_CHECKING:
    from auditfed.detect.engine import Alert, DetectionEngine

log = logging.getLogger(__name__)

__all__ = [
    "AlertStream",
    "Conflict",
    "DetectionService",
    "Webhook",
    "alert_document",
]

#: How each new alert's log line starts; its ``alert`` extra holds id, rule_id, title,
#: level and where in the log it matched (the demo counts these records).
ALERT_RAISED = "alert raised"

#: The store meta key of the watermark (events below it are processed).
WATERMARK_KEY = "detect.processed"
#: Seconds between watermark writes (a crash replays at most this much again).
WATERMARK_EVERY = 1.0
#: At most this many events are replayed at start to rebuild correlation windows.
MAX_REPLAY_EVENTS = 1_000_000
#: Events read per chunk while scanning and replaying the log's tail.
REPLAY_CHUNK = 5_000
#: Events the worker takes from its queue at once.
MAX_BATCH_EVENTS = 20_000
#: Seconds a webhook sender sleeps when nothing is due (new alerts wake it at once).
OUTBOX_POLL = 0.5

#: Auditfed's own actions that detection never looks at.
OWN_ACTIONS = frozenset({"alert.raised", "alert.acknowledged", "alert.closed"})
ACTOR = {"id": "auditfed-detect", "type": "service"}
_SELF = Caller("auditfed-detect", "admin")
#: Namespace of alert ids: uuid5(namespace, dedup key).
_ALERT_NAMESPACE = uuid.UUID("1b0f6a52-8c1e-4f0e-9a53-2f7b6f1f3a10")

LEVELS = ("informational", "low", "medium", "high", "critical")

#: The status an action moves an alert to, and the statuses it may move it from.
TRANSITIONS = {
    "acknowledge": ("acknowledged", ("open",)),
    "close": ("closed", ("open", "acknowledged")),
}


class Conflict(AuditfedError):
    status = 409
    title = "Conflict"


def _now() -> str:
    return format_time(datetime.now(UTC))


def alert_id_of(key: str, origin: str | None = None) -> str:
    """The alert id (and id of its ``alert.raised`` event) for a dedup key of a log.

    Derived, not random: raising the same alert again after a crash finds the same
    log entry. The log's origin is part of it, so the alerts of two logs (nodes of a
    federation) never share an id.
    """
    return str(uuid.uuid5(_ALERT_NAMESPACE, f"{origin or ''}\n{key}"))


def delivery_id_of(alert_id: str, sink: str) -> str:
    """The delivery id of an alert to a webhook (the same across retries and crashes)."""
    return str(uuid.uuid5(_ALERT_NAMESPACE, f"{alert_id}\n{sink}"))


def alert_document(record: AlertRecord) -> dict[str, Any]:
    """The JSON form of an alert: API answers, the SSE stream, webhook bodies."""
    details = record.details
    return {
        "id": record.alert_id,
        "rule_id": record.rule_id,
        "title": record.title,
        "level": record.level,
        "type": details.get("type"),
        "status": record.status,
        "key": record.dedup_key,
        "group": record.group,
        "group_key": details.get("group_key", ""),
        "indexes": list(record.indexes),
        "first_time": record.first_time,
        "last_time": record.last_time,
        "value": details.get("value"),
        "tags": details.get("tags", []),
        "raised_at": record.raised_at,
        "log_index": record.log_index,
        "origin": details.get("origin"),
        "notes": list(record.notes),
        "updated_at": record.updated_at,
    }


# --- configuration ---------------------------------------------------------------------


@dataclass(frozen=True)
class Webhook:
    """One ``[[webhooks]]`` table.

    ``url`` (http/https), ``secret`` (HMAC key, ``whsec_<base64>`` or used as it is;
    or ``secret_env``, the name of an environment variable holding it), ``name``
    (stable id in the outbox; default the URL, then shown as :attr:`label`),
    ``timeout`` seconds per attempt, ``backoff_initial``/``backoff_max`` seconds
    between attempts (doubling, with jitter), ``max_attempts`` (then the
    delivery is given up: it stays in the outbox, never due again, and the alert
    itself stays in the alert store; ``0`` retries for ever), ``min_level`` (only
    alerts of that level or above), ``headers`` (extra request headers),
    ``legacy_signature`` (also send the deprecated ``X-Auditfed-Signature``; default
    true for this release).

    Why a limit by default: a receiver that is gone for good (a decommissioned SIEM
    endpoint) would otherwise keep every alert since in the outbox and be retried for
    ever. With the defaults, 100 attempts span about eight hours.
    """

    # repr=False: the URL (and a name defaulting to it) may hold credentials
    url: str = field(repr=False)
    name: str = field(repr=False)
    secret: str | None = field(default=None, repr=False)
    timeout: float = 5.0
    backoff_initial: float = 1.0
    backoff_max: float = 300.0
    max_attempts: int = 100
    min_level: str | None = None
    headers: dict[str, str] = field(default_factory=dict, repr=False)
    legacy_signature: bool = True

    _KEYS = frozenset({"url", "name", "secret", "secret_env", "timeout", "backoff_initial",
                       "backoff_max", "max_attempts", "min_level", "headers", "legacy_signature"})

    @classmethod
    def from_config(cls, table: dict[str, Any], allowed_hosts: HostAllowList | None = None) -> Webhook:
        import os

        unknown = set(table) - cls._KEYS
        if unknown:
            raise ConfigError(f"webhooks: unknown key(s) {', '.join(sorted(unknown))}")
        url = table.get("url")
        if not isinstance(url, str) or urlsplit(url).scheme not in ("http", "https") \
                or not urlsplit(url).netloc:
            raise ConfigError(f"webhooks: url must be an http(s) URL, not {redact_url(str(url))!r}")
        _check_host(url, allowed_hosts)
        secret = table.get("secret")
        if secret is None and table.get("secret_env"):
            secret = os.environ.get(str(table["secret_env"]))
            if not secret:
                raise ConfigError(f"webhooks: environment variable {table['secret_env']} is not set")
        min_level = table.get("min_level")
        if min_level is not None and min_level not in LEVELS:
            raise ConfigError(f"webhooks: min_level must be one of {', '.join(LEVELS)}")
        try:
            hook = cls(
                url=url,
                name=str(table.get("name") or url),
                secret=str(secret) if secret is not None else None,
                timeout=float(table.get("timeout", 5.0)),
                backoff_initial=float(table.get("backoff_initial", 1.0)),
                backoff_max=float(table.get("backoff_max", 300.0)),
                max_attempts=_attempts(table.get("max_attempts", 100)),
                min_level=min_level,
                headers={str(k): str(v) for k, v in (table.get("headers") or {}).items()},
                legacy_signature=_flag(table.get("legacy_signature", True)),
            )
        except (TypeError, ValueError, AttributeError) as exc:
            raise ConfigError(f"webhooks: {exc}") from None
        if hook.timeout <= 0 or hook.backoff_initial <= 0 or hook.backoff_max < hook.backoff_initial:
            raise ConfigError("webhooks: timeout and backoff_initial must be > 0, "
                              "backoff_max >= backoff_initial")
        if hook.max_attempts < 0:
            raise ConfigError("webhooks: max_attempts must be >= 0 (0: retry for ever)")
        if hook.secret is None:
            log.warning("webhook without a secret: its deliveries are not signed",
                        extra={"webhook": hook.label})
        else:
            signing_key(hook.secret)  # a malformed whsec_ secret stops the start
        return hook

    @property
    def label(self) -> str:
        """How the webhook is shown: its name, or its URL with credentials replaced."""
        return redact_url(self.name) if self.name == self.url else self.name

    def signature_headers(self, delivery_id: str, body: bytes, now: float) -> dict[str, str]:
        """The Standard Webhooks headers of one attempt (plus the deprecated ones)."""
        timestamp = int(now)
        headers = {"webhook-id": delivery_id, "webhook-timestamp": str(timestamp),
                   "X-Auditfed-Delivery": delivery_id}
        if self.secret is not None:
            key = signing_key(self.secret)
            headers["webhook-signature"] = standard_signature(key, delivery_id, timestamp, body)
            if self.legacy_signature:  # keyed as it always was: the secret's UTF-8 bytes
                headers["X-Auditfed-Signature"] = legacy_signature(self.secret.encode(), body)
        return headers

    def wants(self, level: str | None) -> bool:
        if self.min_level is None:
            return True
        rank = LEVELS.index(level) if level in LEVELS else 0
        return rank >= LEVELS.index(self.min_level)

    def gives_up_after(self, attempts: int) -> bool:
        return 0 < self.max_attempts <= attempts

    def backoff(self, attempts: int) -> float:
        """Seconds before attempt ``attempts + 1`` (exponential, capped, 0.8-1.2 jitter)."""
        delay = min(self.backoff_initial * 2 ** max(attempts - 1, 0), self.backoff_max)
        return delay * random.uniform(0.8, 1.2)


def _check_host(url: str, allowed_hosts: HostAllowList | None) -> None:
    if allowed_hosts is None:
        return
    host = urlsplit(url).hostname or ""
    if not allowed_hosts.allows(host):
        raise ConfigError(
            f"webhooks: {redact_url(url)}: host {host!r} is not in webhook_allowed_hosts "
            f"({allowed_hosts.describe()}); add it there or point the webhook elsewhere")


def _flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"legacy_signature must be true or false, not {value!r}")
    return value


def _attempts(value: Any) -> int:
    """``max_attempts`` as given in TOML: an integer (a bool or "3" is a mistake)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"max_attempts must be a whole number, not {value!r}")
    return value


def rule_paths(settings: Settings) -> list[Path]:
    """The rule files and folders detection loads: the bundled pack and ``rules``."""
    from auditfed.detect import DEFAULT_RULES_DIR

    paths = [DEFAULT_RULES_DIR] if settings.default_rules else []
    return paths + [Path(p) for p in settings.rules]


# --- server-sent events ----------------------------------------------------------------


class AlertStream:
    """Fan-out of new alerts to SSE subscribers on the event loop.

    A subscriber that falls more than ``max_backlog`` alerts behind is dropped (its
    stream ends; the client reconnects with ``Last-Event-ID`` and catches up from
    the store). ``None`` on a queue means "end the stream".
    """

    def __init__(self, max_backlog: int = 10_000) -> None:
        self.max_backlog = max_backlog
        self._subscribers: dict[asyncio.Queue, asyncio.AbstractEventLoop] = {}
        self._lock = threading.Lock()
        self.closed = False

    def subscribe(self) -> asyncio.Queue:
        """A queue of alert documents (call on the event loop)."""
        q: asyncio.Queue = asyncio.Queue()
        with self._lock:
            if self.closed:
                q.put_nowait(None)
            else:
                self._subscribers[q] = asyncio.get_running_loop()
        return q

    def unsubscribe(self, q: asyncio.Queue) -> None:
        with self._lock:
            self._subscribers.pop(q, None)

    def publish(self, document: dict[str, Any] | None) -> None:
        """Hand a document to every subscriber (from any thread)."""
        with self._lock:
            subscribers = list(self._subscribers.items())
        for q, loop in subscribers:
            with contextlib.suppress(RuntimeError):  # loop closed
                loop.call_soon_threadsafe(self._put, q, document)

    def _put(self, q: asyncio.Queue, document: dict[str, Any] | None) -> None:
        if document is not None and q.qsize() >= self.max_backlog:
            self.unsubscribe(q)
            q.put_nowait(None)
            return
        q.put_nowait(document)

    def close(self) -> None:
        self.publish(None)
        with self._lock:
            self.closed = True
            self._subscribers.clear()

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)


# --- webhook delivery ------------------------------------------------------------------


class WebhookSender:
    """Delivers one webhook's alerts: a thread, fed in memory and from the outbox.

    A new alert's deliveries are handed over in memory (:meth:`push`) as soon as its
    ``alert.raised`` event is durable, and sent at once while the outbox row is being
    committed; the outcome is written only after that commit. Whatever is not
    delivered that way (receiver down, a restart) is sent from the durable outbox,
    oldest first. Delivery ids are derived from the alert and the webhook, so every
    attempt of one alert's delivery, even across a crash, carries the same
    ``X-Auditfed-Delivery``.

    After a failure the sender pauses (exponential backoff per consecutive failure,
    so a dead receiver gets one attempt per pause, not one per alert); once the
    receiver answers again, everything waiting is sent at once, also what was
    scheduled for later. Outcomes are written by a second thread, so the next POST
    never waits for a store write; a delivery whose outcome is not written yet is
    not picked up again meanwhile.
    """

    def __init__(self, hook: Webhook, store: Store, metrics: _DetectMetrics) -> None:
        self.hook = hook
        self.store = store
        self.metrics = metrics
        self.wake = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"auditfed-webhook-{hook.label[:40]}", daemon=True
        )
        self._outcomes: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._recorder = threading.Thread(
            target=self._record, name=f"auditfed-webhook-outbox-{hook.label[:32]}", daemon=True
        )
        #: deliveries sent (or about to be) whose outcome is not in the outbox yet
        self._unrecorded: set[str] = set()
        self._fresh: list[tuple[DeliveryRecord, threading.Event]] = []
        self._lock = threading.Lock()

    def start(self) -> None:
        self._recorder.start()
        self._thread.start()

    def stop(self, timeout: float) -> None:
        self._stopping.set()
        self.wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        self._outcomes.put(_STOP)
        if self._recorder.is_alive():
            self._recorder.join(timeout)

    def push(self, deliveries: Sequence[DeliveryRecord], stored: threading.Event) -> None:
        """Send these now; their outbox rows are committed when ``stored`` is set."""
        with self._lock:
            for delivery in deliveries:
                self._unrecorded.add(delivery.delivery_id)
                self._fresh.append((delivery, stored))
        self.wake.set()

    def _record(self) -> None:
        while True:
            item = self._outcomes.get()
            if item is _STOP:
                return
            delivery_id, outcome, stored = item
            if stored is not None:
                stored.wait(30)
            try:
                self.store.finish_delivery(delivery_id, **outcome)
            except Exception:
                # Sent but not recorded: it will be sent again (at least once).
                log.exception("cannot record a webhook delivery", extra={"webhook": self.hook.label})
            with self._lock:
                self._unrecorded.discard(delivery_id)

    def _release(self, items: Sequence[tuple[DeliveryRecord, threading.Event | None]]) -> None:
        """Leave fresh deliveries not attempted to the outbox."""
        with self._lock:
            for delivery, stored in items:
                if stored is not None:
                    self._unrecorded.discard(delivery.delivery_id)

    def _next_batch(self, send_all: bool) -> list[tuple[DeliveryRecord, threading.Event | None]]:
        with self._lock:
            fresh, self._fresh = self._fresh, []
            # Taken before the read: an outcome recorded during the read is in here,
            # one recorded before it is not pending any more.
            busy = set(self._unrecorded)
        if fresh:
            return list(fresh)
        due = self.store.pending_deliveries(
            self.hook.name, due_before=1e300 if send_all else time.time(), limit=100)
        with self._lock:
            busy |= self._unrecorded
        return [(d, None) for d in due if d.delivery_id not in busy]

    def _run(self) -> None:
        hook = self.hook
        headers = {"Content-Type": "application/json", "User-Agent": f"auditfed/{__version__}",
                   "X-Auditfed-Event": "alert.raised", **hook.headers}
        failures = 0
        send_all = True  # at start: whatever waits, scheduled or not
        with httpx.Client(timeout=hook.timeout, headers=headers, follow_redirects=False) as client:
            while not self._stopping.is_set():
                self.wake.clear()
                try:
                    batch = self._next_batch(send_all)
                except Exception:
                    log.exception("cannot read the webhook outbox", extra={"webhook": hook.label})
                    self._stopping.wait(1.0)
                    continue
                send_all = False
                if not batch:
                    self.wake.wait(OUTBOX_POLL)
                    continue
                for position, (delivery, stored) in enumerate(batch):
                    if self._stopping.is_set():
                        self._release(batch[position:])
                        return
                    if self._attempt(client, delivery, stored):
                        send_all = failures > 0
                        failures = 0
                    else:
                        failures += 1
                        self._release(batch[position + 1:])
                        self._stopping.wait(hook.backoff(failures))
                        break

    def _attempt(self, client: httpx.Client, delivery: DeliveryRecord,
                 stored: threading.Event | None) -> bool:
        hook = self.hook
        with self._lock:
            self._unrecorded.add(delivery.delivery_id)
        headers = hook.signature_headers(delivery.delivery_id, delivery.payload, time.time())
        error: str | None = None
        try:
            # Redirects are not followed (the client's follow_redirects=False): a 3xx is
            # a failed attempt, so an allowed host cannot send alerts on to another one.
            response = client.post(hook.url, content=delivery.payload, headers=headers)
            if not 200 <= response.status_code < 300:
                error = f"HTTP {response.status_code}"
        except httpx.HTTPError as exc:
            # An exception's text may quote the URL: it goes to the log and the outbox.
            error = scrub(f"{type(exc).__name__}: {exc}", hook.url)[:500]
        attempts = delivery.attempts + 1
        now = time.time()
        self.metrics.deliveries.labels("delivered" if error is None else "failed").inc()
        if error is None:
            outcome = {"delivered_at": format_time(datetime.fromtimestamp(now, UTC)),
                       "next_attempt_at": now, "error": None, "attempts": attempts}
        elif hook.gives_up_after(attempts):
            log.error("webhook delivery given up", extra={
                "webhook": hook.label, "delivery": delivery.delivery_id, "alert": delivery.alert_id,
                "attempts": attempts, "error": error})
            self.metrics.abandoned.inc()
            # Never due again (an infinite next attempt), kept for the record.
            outcome = {"delivered_at": None, "next_attempt_at": math.inf,
                       "error": f"given up after {attempts} attempts: {error}", "attempts": attempts}
        else:
            log.warning("webhook delivery failed", extra={
                "webhook": hook.label, "delivery": delivery.delivery_id, "alert": delivery.alert_id,
                "attempts": attempts, "error": error})
            outcome = {"delivered_at": None, "next_attempt_at": now + hook.backoff(attempts),
                       "error": error, "attempts": attempts}
        self._outcomes.put((delivery.delivery_id, outcome, stored))
        return error is None


# --- metrics ---------------------------------------------------------------------------


class _DetectMetrics:
    def __init__(self, registry: CollectorRegistry | None) -> None:
        r = registry or CollectorRegistry()
        self.alerts = Counter("auditfed_alerts_raised", "Alerts raised", ["level"], registry=r)
        self.deliveries = Counter(
            "auditfed_webhook_attempts", "Webhook delivery attempts", ["result"], registry=r
        )
        self.abandoned = Counter(
            "auditfed_webhook_given_up", "Webhook deliveries given up after max_attempts", registry=r
        )
        self.lag = Gauge("auditfed_detect_lag_events", "Committed events not yet detected", registry=r)
        self.errors = Counter("auditfed_detect_errors", "Events the engine failed on", registry=r)


# --- the service -----------------------------------------------------------------------


_STOP = object()


def _own_event(event: dict[str, Any]) -> bool:
    source = event.get("source")
    attributes = event.get("attributes")
    return (
        type(source) is dict
        and source.get("kind") == "auditfed"
        and source.get("service") == "auditfed"
        and event.get("action") in OWN_ACTIONS
        # a node's event kept by a hub (origin-tagged) is the node's, never the hub's own
        and not (type(attributes) is dict and FEDERATION_FIELD in attributes)
    )


class DetectionService:
    """Live detection, alert storage and alert sinks of one node.

    ``engine`` is ``None`` when detection is switched off (no rules configured):
    stored alerts can still be read, acknowledged and closed, and the outbox is
    still delivered.
    """

    def __init__(
        self,
        store: Store,
        sequencer: Sequencer,
        engine: DetectionEngine | None,
        webhooks: Sequence[Webhook] = (),
        *,
        origin: str | None = None,
        node_name: str | None = None,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.store = store
        self.sequencer = sequencer
        self.engine = engine
        self.webhooks = list(webhooks)
        self.origin = origin
        self.node_name = node_name
        self.stream = AlertStream()
        self.metrics = _DetectMetrics(registry)
        self.senders = [WebhookSender(hook, store, self.metrics) for hook in self.webhooks]
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="auditfed-detect", daemon=True)
        #: matched alerts on their way to the log and store (a second thread, so the
        #: engine never waits for storage and alerts that queue meanwhile share one write)
        self._raise_queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._raiser = threading.Thread(target=self._raise_loop, name="auditfed-alerts", daemon=True)
        self._next = 0  # the next log index to process
        self._upto = 0  # every event below this one has its alerts stored
        self._saved = -1  # the watermark last written
        self._saved_at = 0.0
        self._healthy = True
        self._start_size = 0
        self._status_lock = threading.Lock()
        self.ready = threading.Event()
        self.started = False
        self.metrics.lag.set_function(lambda: max(self.sequencer.size - self._next, 0)
                                      if self.engine is not None else 0)

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        store: Store,
        sequencer: Sequencer,
        *,
        origin: str | None = None,
        registry: CollectorRegistry | None = None,
    ) -> DetectionService:
        allowed = (HostAllowList.parse(settings.webhook_allowed_hosts)
                   if settings.webhook_allowed_hosts is not None else None)
        webhooks = [Webhook.from_config(dict(table), allowed) for table in settings.webhooks]
        names = [hook.name for hook in webhooks]
        if len(set(names)) != len(names):
            raise ConfigError("webhooks: two webhooks have the same name (or URL); name them")
        paths = rule_paths(settings)
        engine = None
        if paths:
            from auditfed.detect.engine import DetectionEngine

            for path in paths:
                if not path.exists():
                    raise ConfigError(f"rules: {path} does not exist")
            engine = DetectionEngine(paths)
            for error in engine.errors:
                log.warning("rule refused", extra={"error": str(error)})
            log.info("detection rules loaded", extra={
                "rules": engine.rule_count, "refused": len(engine.errors),
                "replay_seconds": engine.replay_seconds})
        return cls(store, sequencer, engine, webhooks, origin=origin,
                   node_name=settings.node_name, registry=registry)

    @property
    def enabled(self) -> bool:
        return self.engine is not None

    # --- lifecycle ---

    def start(self) -> None:
        """Subscribe to commits and start the worker and the webhook senders."""
        self.started = True
        if self.engine is not None:
            # Listener first, then the size: everything below the size is read from
            # the store, everything committed later arrives through the listener
            # (indexes seen both ways are skipped by ``_next``).
            self.sequencer.listeners.append(self._on_commit)
            self._start_size = self.sequencer.size
            self._raiser.start()
            self._thread.start()
        else:
            self.ready.set()
        for sender in self.senders:
            sender.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Process what is queued (at most ``timeout`` s), then stop every thread.

        Call while the sequencer still runs: alerts are appended to the log.
        """
        if not self.started:
            return
        self.started = False
        if self.engine is not None:
            with contextlib.suppress(ValueError):
                self.sequencer.listeners.remove(self._on_commit)
            self._queue.put(_STOP)
            self._thread.join(timeout)
        self.stream.close()
        for sender in self.senders:
            sender.stop(timeout)

    # --- the writer thread's side: only queue ---

    def _on_commit(self, first_index: int, rows: Sequence[EntryRow]) -> None:
        if rows:
            self._queue.put((first_index, [row.data for row in rows]))

    # --- the worker ---

    def _run(self) -> None:
        try:
            self._catch_up()
        except Exception:
            self._healthy = False
            log.exception("detection could not replay the log's tail")
        self.ready.set()
        handle_batches(self._queue, self._process_batch, stop=_STOP, cap=MAX_BATCH_EVENTS,
                       size=lambda item: len(item[1]))
        self._raise_queue.put(_STOP)
        self._raiser.join()

    def _process_batch(self, batch: list[tuple[int, list[bytes]]]) -> None:
        engine = self.engine
        assert engine is not None
        process = engine.process
        alerts: list[Alert] = []
        for first_index, datas in batch:
            # rows below ``_next`` were already processed (at start, seen both ways)
            skip = max(self._next - first_index, 0)
            for index, data in enumerate(datas[skip:] if skip else datas, first_index + skip):
                try:
                    event = orjson.loads(data)
                    if not _own_event(event):
                        found = process(index, event)
                        if found:
                            alerts.extend(found)
                except Exception:
                    self.metrics.errors.inc()
                    log.exception("detection failed on an event", extra={"index": index})
            self._next = max(self._next, first_index + len(datas))
        self._raise_queue.put((alerts, self._next))

    def _raise_loop(self) -> None:
        """Raise what the engine matched, in order; then move the watermark on."""
        handle_batches(self._raise_queue, self._raise_batch, stop=_STOP)
        self._save_watermark(force=True)

    def _raise_batch(self, items: list[tuple[list[Alert], int]]) -> None:
        alerts = [alert for found, _ in items for alert in found]
        if alerts and not self._raise_with_retries(alerts):
            return
        self._upto = items[-1][1]
        self._save_watermark()

    def _raise_with_retries(self, alerts: list[Alert]) -> bool:
        delay = 0.05
        for attempt in range(8):
            try:
                self.raise_alerts(alerts)
                return True
            except Exception as exc:
                if attempt == 7 or not self.started:
                    break
                log.warning("raising alerts failed; retrying", extra={"error": str(exc)})
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
        # The watermark stays where it is: the next start re-raises what is missing.
        self._healthy = False
        log.error("alerts could not be stored; they are raised again at the next start",
                  extra={"keys": [a.key for a in alerts][:20]})
        return False

    def _save_watermark(self, *, force: bool = False) -> None:
        upto = self._upto
        if not self._healthy or upto == self._saved:
            return
        now = time.monotonic()
        if not force and now - self._saved_at < WATERMARK_EVERY:
            return
        try:
            self.store.set_meta(WATERMARK_KEY, str(upto))
        except Exception:
            log.exception("cannot save the detection watermark")
            return
        self._saved, self._saved_at = upto, now

    # --- restart: rebuild windows, then catch up ---

    def _catch_up(self) -> None:
        engine = self.engine
        assert engine is not None
        size = self._start_size
        saved = self.store.get_meta(WATERMARK_KEY)
        # No watermark: detection is new on this log. Start from here, with the
        # windows of the recent past rebuilt but nothing of it raised.
        watermark = size if saved is None else min(int(saved), size)
        start = max(self._tail_start(watermark, engine.replay_seconds), watermark - MAX_REPLAY_EVENTS, 0)
        started = time.monotonic()
        if start < watermark:
            engine.replay(self._events(start, watermark), None)
        self._next = self._upto = watermark
        if saved is None:
            self._save_watermark(force=True)
        # Events committed but not yet processed when the last run ended: as live.
        for lo in range(watermark, size, REPLAY_CHUNK):
            entries = self.store.entries(lo, min(lo + REPLAY_CHUNK, size))
            if entries:
                self._process_batch([(entries[0][0], [data for _, data in entries])])
        if size:
            log.info("detection caught up", extra={
                "replayed": watermark - start, "processed": size - watermark,
                "seconds": round(time.monotonic() - started, 3)})

    def _events(self, start: int, end: int) -> Any:
        for lo in range(start, end, REPLAY_CHUNK):
            for index, data in self.store.entries(lo, min(lo + REPLAY_CHUNK, end)):
                event = orjson.loads(data)
                if not _own_event(event):
                    yield index, event

    def _tail_start(self, end: int, seconds: float) -> int:
        """The first index of the events within ``seconds`` of event time before ``end``.

        Event times are roughly ordered in the log: scan back by chunks until a
        whole chunk is older than the newest time seen minus ``seconds``.
        """
        if seconds <= 0 or end <= 0:
            return end
        newest: float | None = None
        start = end
        hi = end
        while hi > 0 and end - hi < MAX_REPLAY_EVENTS:
            lo = max(hi - REPLAY_CHUNK, 0)
            times = [parse_time(orjson.loads(data).get("time")) for _, data in self.store.entries(lo, hi)]
            known = [t for t in times if t is not None]
            if known:
                if newest is None:
                    newest = max(known)
                if max(known) < newest - seconds:
                    break
            start = lo
            hi = lo
        return start

    # --- raising ---

    def raise_alerts(self, alerts: Sequence[Alert]) -> list[AlertRecord]:
        """Log, store and deliver the alerts whose keys are not stored yet."""
        unique = list({a.key: a for a in alerts}.values())
        stored = self.store.stored_alert_keys([a.key for a in unique])
        fresh = [a for a in unique if a.key not in stored]
        if not fresh:
            return []
        raised_at = _now()
        ids = [alert_id_of(a.key, self.origin) for a in fresh]
        prepared = [
            prepare_event(self._event_of(alert, alert_id), position, _SELF, raised_at, own=True)
            for position, (alert, alert_id) in enumerate(zip(fresh, ids, strict=True))
        ]
        sequenced = self.sequencer.append_sync(prepared)
        records = []
        deliveries: list[DeliveryRecord] = []
        now = time.time()
        for alert, alert_id, result in zip(fresh, ids, sequenced, strict=True):
            record = AlertRecord(
                alert_id=alert_id,
                dedup_key=alert.key,
                rule_id=alert.rule_id,
                title=alert.title,
                level=alert.level,
                group=dict(alert.group),
                indexes=tuple(alert.indexes),
                first_time=alert.first_time,
                last_time=alert.last_time,
                raised_at=raised_at,
                log_index=result.index,
                details={"type": alert.type, "tags": list(alert.tags), "value": alert.value,
                         "group_key": alert.group_key, "origin": self.origin},
            )
            records.append(record)
            payload = orjson.dumps(alert_document(record))
            deliveries.extend(
                DeliveryRecord(delivery_id_of(alert_id, hook.name), alert_id, hook.name, payload, 0, now)
                for hook in self.webhooks if hook.wants(alert.level)
            )
        # The alert is in the log: send it now, while its outbox rows are committed
        # (a crash before that commit raises it again at start, same delivery ids).
        stored = threading.Event()
        for sender in self.senders:
            mine = [d for d in deliveries if d.sink == sender.hook.name]
            if mine:
                sender.push(mine, stored)
        try:
            kept = set(self.store.add_alerts(records, deliveries))
        finally:
            stored.set()
        raised = [r for r in records if r.alert_id in kept]
        for record in raised:
            document = alert_document(record)
            self.stream.publish(document)
            self.metrics.alerts.labels(record.level or "none").inc()
            log.warning(ALERT_RAISED + ": %s [%s] (level %s)", document["title"], document["rule_id"],
                        document["level"] or "none", extra={"alert": {
                            k: document[k] for k in ("id", "rule_id", "title", "level", "type", "indexes",
                                                     "group", "log_index", "first_time", "last_time")}})
        return raised

    def _event_of(self, alert: Alert, alert_id: str) -> dict[str, Any]:
        source: dict[str, Any] = {"service": "auditfed", "kind": "auditfed"}
        if self.node_name:
            source["node"] = self.node_name
        attributes: dict[str, Any] = {
            "alert_id": alert_id,
            "rule_id": alert.rule_id,
            "rule_title": alert.title,
            "level": alert.level,
            "type": alert.type,
            "key": alert.key,
            "indexes": list(alert.indexes),
            "first_time": alert.first_time,
            "last_time": alert.last_time,
        }
        if alert.group:
            attributes["group"] = dict(alert.group)
        if alert.value is not None:
            attributes["value"] = alert.value
        if alert.tags:
            attributes["tags"] = list(alert.tags)
        return {
            "id": alert_id,
            "action": "alert.raised",
            "outcome": "success",
            "actor": dict(ACTOR),
            "resource": {"type": "alert", "id": alert_id, "name": alert.title[:512]},
            "source": source,
            "attributes": attributes,
        }

    # --- auditors' actions ---

    def change_status(self, alert_id: str, action: str, note: str, caller: Caller) -> AlertRecord:
        """Acknowledge or close an alert with a note; the change is logged first.

        Raises :class:`NotFound` or :class:`Conflict` (already in that state).
        """
        status, expected = TRANSITIONS[action]
        with self._status_lock:
            current = self.store.get_alert(alert_id)
            if current is None:
                raise NotFound(f"no alert {alert_id}")
            if current.status not in expected:
                raise Conflict(f"alert {alert_id} is {current.status}; it cannot be {status}")
            observed = _now()
            source: dict[str, Any] = {"service": "auditfed", "kind": "auditfed"}
            if self.node_name:
                source["node"] = self.node_name
            event = {
                "action": f"alert.{status}",
                "outcome": "success",
                "actor": {"id": f"token:{caller.token_id}", "type": caller.role},
                "resource": {"type": "alert", "id": alert_id, "name": current.title[:512]},
                "source": source,
                "reason": note,
                "attributes": {"alert_id": alert_id, "rule_id": current.rule_id,
                               "previous_status": current.status, "status": status,
                               "alert_log_index": current.log_index, "note": note},
            }
            [result] = self.sequencer.append_sync([prepare_event(event, 0, _SELF, observed, own=True)])
            updated = self.store.update_alert(
                alert_id, expected=expected, status=status, updated_at=observed,
                note={"time": observed, "by": f"token:{caller.token_id}", "role": caller.role,
                      "status": status, "note": note, "log_index": result.index},
            )
        if updated is None:  # changed by another node meanwhile
            raise Conflict(f"alert {alert_id} changed meanwhile; it cannot be {status}")
        log.info(f"alert {status}", extra={"alert": alert_id, "by": caller.token_id,
                                           "log_index": result.index})
        return updated
