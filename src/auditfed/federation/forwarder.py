"""The node side of federation: forward the log to the hub, in order, exactly once.

A background thread sends the node's entries in index order, in batches of
``upstream_batch``, each with the node's latest signed checkpoint (C2SP
tlog-checkpoint) and the RFC 9162 consistency proofs the hub needs
(:mod:`auditfed.federation.protocol`). It never keeps its own idea of progress: after
start-up and after any failure it asks the hub where it stands
(``GET /v1/federation/nodes/{name}/position``) and resumes there, so an outage of the
hub, of the link or of the node itself loses nothing and sends nothing twice (a
re-sent entry is recognised by the hub). Failures are retried with exponential
backoff and jitter. When idle, a heartbeat (an empty batch with the latest
checkpoint) tells the hub the node is alive and gets the checkpoint cosigned.

The hub's cosignatures (C2SP tlog-cosignature) are kept in the store, and served
with the checkpoint by ``GET /v1/log/checkpoint?cosigned=1``.

Lag is exported as ``auditfed_federation_lag_entries`` and
``auditfed_federation_lag_seconds`` (age of the oldest entry the hub has not
acknowledged), and in ``auditfed federation status``.
"""

from __future__ import annotations

import base64
import logging
import random
import threading
import time
from collections import deque
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import httpx
import orjson
from prometheus_client import Counter, Gauge, Histogram

from auditfed.errors import ConfigError
from auditfed.event.model import format_time
from auditfed.ledger import consistency_proof

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


class HubError(Exception):
    """The hub answered with an error (or a refusal)."""

    def __init__(self, status: int, detail: str, body: dict[str, Any] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.body = body or {}


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class Forwarder:
    def __init__(self, node: Node) -> None:
        settings = node.settings
        if not settings.node_name:
            raise ConfigError("a node that forwards upstream needs --node-name")
        if not settings.upstream_token:
            raise ConfigError("a node that forwards upstream needs --upstream-token")
        assert settings.upstream is not None
        self.node = node
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
            "upstream": self.upstream,
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
                self.failures.inc()
                self.position = None
                refused = isinstance(exc, HubError) and exc.status in (403, 409)
                self.state = "refused" if refused else "retrying"
                self.last_error = str(exc)[:500]
                if refused:
                    self.refusal = self.last_error
                    log.error("the hub refuses this node", extra={"detail": self.last_error})
                    continue
                log.warning("forwarding failed; retrying",
                            extra={"error": self.last_error, "backoff": round(backoff, 2)})
                self._stop.wait(backoff * random.uniform(0.5, 1.0))
                backoff = min(backoff * 2, MAX_BACKOFF)

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
        log.info("resuming forwarding", extra={"position": self.position, "upstream": self.upstream})

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
        """Send one batch or heartbeat if one is due; False when there is nothing to do."""
        assert self.position is not None
        position = self.position
        size = self.node.sequencer.size
        if size > position:
            checkpoint = self._checkpoint(position)
            assert checkpoint is not None
            end = min(position + self.batch, checkpoint.size)
        elif time.monotonic() - self._last_sent >= self.heartbeat:
            checkpoint = self.node.sequencer.latest_checkpoint or self.node.sequencer.checkpoint_now()
            end = position
        else:
            return False
        self._send(position, end, checkpoint)
        return True

    def _send(self, start: int, end: int, checkpoint: CheckpointRecord) -> None:
        store = self.node.store
        rows = store.entries(start, end) if end > start else []
        if len(rows) != end - start or any(i != start + k for k, (i, _) in enumerate(rows)):
            raise RuntimeError(f"the local log has a gap in [{start}, {end}): run 'auditfed verify'")
        size = checkpoint.size
        proof = consistency_proof(end, size, store) if 0 < end < size else []
        prior_size = self.hub_checkpoint
        prior = consistency_proof(prior_size, size, store) if 0 < prior_size < size else []
        body = orjson.dumps({
            "start": start,
            "entries": [_b64(data) for _, data in rows],
            "checkpoint": checkpoint.note,
            "proof": [_b64(h) for h in proof],
            "prior": [_b64(h) for h in prior],
        })
        answer = self._call("POST", f"/v1/federation/nodes/{self.name}/entries", content=body,
                            headers={"Content-Type": "application/json"})
        self._last_sent = time.monotonic()
        position = int(answer["position"])
        now = format_time(datetime.now(UTC))
        witness = answer.get("witness", "hub")
        for line in answer.get("cosignatures", []):
            store.add_cosignature(size, witness, line, now)
        self.cosigned_size = size
        self.forwarded.inc(max(0, position - start))
        self._acknowledged(position)
        self.position = position
        self.hub_checkpoint = int(answer.get("checkpoint_size", size))
        self.state = "forwarding"
        self.last_success = now
