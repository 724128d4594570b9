"""The node side of federation: forward the log to the hub, in order, exactly once.

A background thread sends the node's entries in index order, in batches of
``upstream_batch``, each with the node's latest signed checkpoint (C2SP
tlog-checkpoint) and the RFC 9162 consistency proofs the hub needs
(:mod:`auditfed.federation.protocol`). It never keeps its own idea of progress: after
start-up and after any failure it asks the hub where it stands
(``GET /v1/federation/nodes/{name}/position``) and resumes there, so an outage of the
hub, of the link or of the node itself loses nothing and sends nothing twice (a
re-sent entry is recognised by the hub). Up to ``PIPELINE`` batches are in flight:
the next one is sent before the hub answers the previous one, and the answers are
taken in order. Failures are retried with exponential backoff and jitter. When
idle, a heartbeat (an empty batch with the latest checkpoint) tells the hub the node
is alive and gets the checkpoint cosigned.

The hub's cosignatures (C2SP tlog-cosignature) are kept in the store, and served
with the checkpoint by ``GET /v1/log/checkpoint?cosigned=1``.

On a PostgreSQL cluster (several servers, one log) only the log's leader forwards:
the others keep a forwarder in ``standby`` that takes over, from the hub's position,
when their server becomes the leader. One sender per log keeps the hub's view of
the node simple (one stream of batches, in order) and spends the link once; during
a change of leader two forwarders may overlap for a moment, which is safe (the hub
recognises re-sent entries).

Lag is exported as ``auditfed_federation_lag_entries`` and
``auditfed_federation_lag_seconds`` (age of the oldest entry the hub has not
acknowledged), and in ``auditfed federation status``.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NamedTuple

import httpx
import orjson
from prometheus_client import Counter, Gauge, Histogram

from auditfed.errors import ConfigError
from auditfed.event.model import format_time
from auditfed.federation.protocol import FOLLOWS_HEADER, encode_entry
from auditfed.ledger import consistency_proof
from auditfed.safeurl import redact_url, scrub

if TYPE_CHECKING:
    from collections.abc import Sequence

    from auditfed.node import Node
    from auditfed.store.base import CheckpointRecord, EntryRow

log = logging.getLogger(__name__)

__all__ = ["Forwarder"]

MIN_BACKOFF = 0.2
MAX_BACKOFF = 5.0
REFUSED_RETRY = 10.0
#: Least time between checkpoints the forwarder asks the sequencer to sign.
FORCED_CHECKPOINT_INTERVAL = 0.05
_MAX_COMMITS_TRACKED = 100_000
#: Batches in flight to the hub: the hub checks the next one while it appends the
#: previous one (see :mod:`auditfed.federation.hub`).
PIPELINE = 2
#: Seconds between two looks at whether a standby forwarder's server leads the log.
STANDBY_POLL = 0.5
#: Most bytes of entries in one batch: half the hub's default ``max_body_bytes``.
MAX_BATCH_BYTES = 8 * 1024 * 1024


class HubError(Exception):
    """The hub answered with an error (or a refusal)."""

    def __init__(self, status: int, detail: str, body: dict[str, Any] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.body = body or {}


class _Flight(NamedTuple):
    """A batch sent to the hub and not yet settled."""

    start: int
    end: int
    #: Size of the checkpoint it was sent with.
    size: int
    answer: Future[dict[str, Any]]


def _fitting(entries: list[str | dict[str, str]], sizes: list[int], limit: int) -> int:
    """How many of the first encoded entries fit in ``limit`` bytes of JSON (at least
    one): a batch of a few thousand large events must not pass the hub's body limit (a
    413 would repeat on every retry). ``sizes`` are the entries' leaf data sizes."""
    # An encoded entry takes at most 6 bytes per byte of data (a control character
    # escaped as \u00XX; base64 is 4/3), plus its wrapping: measure only when that
    # bound does not settle it.
    if 6 * sum(sizes) + 16 * len(sizes) <= limit:
        return len(entries)
    total = 0
    for count, entry in enumerate(entries):
        total += len(orjson.dumps(entry)) + 1
        if total > limit and count > 0:
            return count
    return len(entries)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class Forwarder:
    def __init__(self, node: Node, *, leads: Callable[[], bool] | None = None) -> None:
        """``leads``: whether this server should forward now (a cluster's leader test);
        without it, always."""
        settings = node.settings
        if not settings.node_name:
            raise ConfigError("a node that forwards upstream needs --node-name")
        if not settings.upstream_token:
            raise ConfigError("a node that forwards upstream needs --upstream-token")
        assert settings.upstream is not None
        self.node = node
        self._leads = leads or (lambda: True)
        self.name = settings.node_name
        self.upstream = settings.upstream.rstrip("/")
        self.batch = settings.upstream_batch
        self.heartbeat = settings.upstream_heartbeat
        self.http = httpx.Client(
            base_url=self.upstream, timeout=30,
            headers={"Authorization": f"Bearer {settings.upstream_token}",
                     "User-Agent": f"auditfed-forwarder/{self.name}"},
        )
        #: The hub's acknowledged position (None: ask the hub).
        self.position: int | None = None
        self.hub_checkpoint = 0
        self.state = "starting"
        self.refusal: str | None = None
        self.last_error: str | None = None
        self.last_success: str | None = None
        self.cosigned_size: int | None = node.store.latest_cosigned_size()
        self._last_sent = 0.0
        self._last_forced = 0.0
        self._started = time.monotonic()
        self._commits: deque[tuple[int, float]] = deque()  # (end index, commit time)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="auditfed-forwarder", daemon=True)
        self._flights: deque[_Flight] = deque()
        self._posts = ThreadPoolExecutor(PIPELINE, thread_name_prefix="auditfed-forwarder-post")
        node.sequencer.listeners.append(self._on_commit)
        r = node.metrics.registry
        self.forwarded = Counter("auditfed_federation_forwarded_entries",
                                 "Entries the hub acknowledged", registry=r)
        self.failures = Counter("auditfed_federation_forward_failures",
                                "Failed attempts to forward to the hub", registry=r)
        self.lag_histogram = Histogram(
            "auditfed_federation_forward_lag_seconds",
            "Time from commit to the hub's acknowledgement, per entry",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300), registry=r)
        Gauge("auditfed_federation_lag_entries", "Entries not yet acknowledged by the hub",
              registry=r).set_function(self.lag_entries)
        Gauge("auditfed_federation_lag_seconds",
              "Age of the oldest entry not yet acknowledged by the hub",
              registry=r).set_function(self.lag_seconds)
        Gauge("auditfed_federation_acknowledged", "Entries acknowledged by the hub",
              registry=r).set_function(lambda: self.position or 0)

    # --- lifecycle ---
    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        self._posts.shutdown(wait=False, cancel_futures=True)
        self.http.close()

    # --- lag ---
    def _on_commit(self, first_index: int, rows: Sequence[EntryRow]) -> None:
        if not rows:
            return
        end = first_index + len(rows)
        if len(self._commits) >= _MAX_COMMITS_TRACKED:
            self._commits[-1] = (end, self._commits[-1][1])  # merge: over- rather than under-state lag
        else:
            self._commits.append((end, time.monotonic()))
        self._wake.set()

    def lag_entries(self) -> int:
        return max(0, self.node.sequencer.size - (self.position or 0)) if self.position is not None else 0

    def lag_seconds(self) -> float:
        position = self.position
        if position is None or position >= self.node.sequencer.size:
            return 0.0
        for end, at in list(self._commits):
            if end > position:
                return time.monotonic() - at
        return time.monotonic() - self._started

    def _acknowledged(self, position: int) -> None:
        now = time.monotonic()
        commits = self._commits
        while commits and commits[0][0] <= position:
            _, at = commits.popleft()
            self.lag_histogram.observe(now - at)

    def status(self) -> dict[str, Any]:
        size = self.node.sequencer.size
        return {
            "node": self.name,
            "upstream": redact_url(self.upstream),  # shown: never its credentials
            "state": self.state,
            "refusal": self.refusal,
            "size": size,
            "acknowledged": self.position,
            "lag_entries": self.lag_entries() if self.position is not None else None,
            "lag_seconds": round(self.lag_seconds(), 3),
            "hub_checkpoint": self.hub_checkpoint,
            "cosigned_size": self.cosigned_size,
            "last_success": self.last_success,
            "last_error": self.last_error,
        }

    # --- the loop ---
    def _run(self) -> None:
        backoff = MIN_BACKOFF
        while not self._stop.is_set():
            if not self._leads():
                self._stand_by()
                continue
            try:
                if self.position is None:
                    self._sync()
                if self.state == "refused":
                    self.position = None
                    self._stop.wait(REFUSED_RETRY)
                    continue
                if not self._step():
                    self._wake.wait(max(0.0, self._last_sent + self.heartbeat - time.monotonic()))
                    self._wake.clear()
                backoff = MIN_BACKOFF
            except Exception as exc:  # keep forwarding whatever happened
                self._drain()
                self.failures.inc()
                self.position = None
                refused = isinstance(exc, HubError) and exc.status in (403, 409)
                self.state = "refused" if refused else "retrying"
                self.last_error = scrub(str(exc), self.upstream)[:500]  # may quote the URL
                if refused:
                    self.refusal = self.last_error
                    log.error("the hub refuses this node", extra={"detail": self.last_error})
                    continue
                log.warning("forwarding failed; retrying",
                            extra={"error": self.last_error, "backoff": round(backoff, 2)})
                self._stop.wait(backoff * random.uniform(0.5, 1.0))
                backoff = min(backoff * 2, MAX_BACKOFF)

    def _stand_by(self) -> None:
        """Not the leader: let the batches in flight finish, forget the position (the
        next term starts from the hub's), and look again in a moment."""
        if self.state != "standby":
            self._drain()
            self.position = None
            self.state = "standby"
            log.info("not the log's leader: forwarding stands by")
        self._stop.wait(STANDBY_POLL)

    def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        response = self.http.request(method, path, **kwargs)
        try:
            body = response.json()
        except ValueError:
            body = {}
        if response.status_code >= 400:
            detail = body.get("detail") if isinstance(body, dict) else None
            raise HubError(response.status_code, f"{response.status_code}: {detail or response.text[:200]}",
                           body if isinstance(body, dict) else None)
        return body

    def _sync(self) -> None:
        """Ask the hub where this node's log stands there."""
        body = self._call("GET", f"/v1/federation/nodes/{self.name}/position")
        if body.get("status") != "active":
            self.state = "refused"
            self.refusal = body.get("reason")
            return
        self.position = int(body["position"])
        self.hub_checkpoint = (body.get("checkpoint") or {}).get("size", 0)
        self.state = "forwarding"
        self.refusal = None
        log.info("resuming forwarding", extra={"position": self.position, "upstream": redact_url(self.upstream)})

    def _checkpoint(self, need_beyond: int) -> CheckpointRecord | None:
        sequencer = self.node.sequencer
        latest = sequencer.latest_checkpoint
        if latest is not None and latest.size > need_beyond:
            return latest
        wait = self._last_forced + FORCED_CHECKPOINT_INTERVAL - time.monotonic()
        if wait > 0:
            self._stop.wait(wait)
        self._last_forced = time.monotonic()
        return sequencer.checkpoint_now()

    def _step(self) -> bool:
        """Send what is due, up to ``PIPELINE`` batches in flight, then settle the oldest
        answer; False when there is nothing to do."""
        while len(self._flights) < PIPELINE and self._send_next():
            pass
        if not self._flights:
            return False
        self._settle(self._flights.popleft())
        return True

    def _send_next(self) -> bool:
        """Send the batch after those in flight, or a heartbeat when idle and due."""
        assert self.position is not None
        start = self._flights[-1].end if self._flights else self.position
        if self.node.sequencer.size > start:
            checkpoint = self._checkpoint(start)
            assert checkpoint is not None
            end = min(start + self.batch, checkpoint.size)
        elif not self._flights and time.monotonic() - self._last_sent >= self.heartbeat:
            checkpoint = self.node.sequencer.latest_checkpoint or self.node.sequencer.checkpoint_now()
            end = start
        else:
            return False
        self._flights.append(self._send(start, end, checkpoint))
        return True

    def _send(self, start: int, end: int, checkpoint: CheckpointRecord) -> _Flight:
        store = self.node.store
        rows = store.entries(start, end) if end > start else []
        if len(rows) != end - start or any(i != start + k for k, (i, _) in enumerate(rows)):
            raise RuntimeError(f"the local log has a gap in [{start}, {end}): run 'auditfed verify'")
        entries = [encode_entry(data) for _, data in rows]
        del entries[_fitting(entries, [len(data) for _, data in rows], MAX_BATCH_BYTES):]
        end = start + len(entries)
        size = checkpoint.size
        proof = consistency_proof(end, size, store) if 0 < end < size else []
        # The hub checks this batch against the checkpoint of the one before it.
        prior_size = self._flights[-1].size if self._flights else self.hub_checkpoint
        prior = consistency_proof(prior_size, size, store) if 0 < prior_size < size else []
        body = orjson.dumps({
            "start": start,
            "leaves": entries,
            "checkpoint": checkpoint.note,
            "proof": [_b64(h) for h in proof],
            "prior": [_b64(h) for h in prior],
        })
        headers = {"Content-Type": "application/json"}
        if self._flights:
            headers[FOLLOWS_HEADER] = str(start)
        answer = self._posts.submit(self._call, "POST", f"/v1/federation/nodes/{self.name}/entries",
                                    content=body, headers=headers)
        return _Flight(start, end, size, answer)

    def _settle(self, flight: _Flight) -> None:
        """Take the hub's answer to a batch (in the order they were sent)."""
        answer = flight.answer.result()
        self._last_sent = time.monotonic()
        position = int(answer["position"])
        now = format_time(datetime.now(UTC))
        witness = answer.get("witness", "hub")
        for line in answer.get("cosignatures", []):
            self.node.store.add_cosignature(flight.size, witness, line, now)
        self.cosigned_size = flight.size
        self.forwarded.inc(max(0, position - flight.start))
        self._acknowledged(position)
        self.position = position
        self.hub_checkpoint = int(answer.get("checkpoint_size", flight.size))
        self.state = "forwarding"
        self.last_success = now

    def _drain(self) -> None:
        """Wait out the batches in flight after a failure (their answers no longer count:
        the forwarder re-syncs with the hub)."""
        while self._flights:
            with contextlib.suppress(Exception):
                self._flights.popleft().answer.result()
