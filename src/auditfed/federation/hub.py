"""The hub side of federation: enrolment, verification of node batches, witnessing, alerts.

Every auditfed server can be a hub: it becomes one for a node once an admin enrols
the node (``auditfed node add NAME --key VKEY``), which issues a ``node`` token
bound to the name. For each batch a node sends, the hub checks it
(:func:`~auditfed.federation.protocol.verify_batch`), appends the new entries to its
own log wrapped with their origin (:mod:`~auditfed.federation.envelope`), then
records the node's new position, compact range and checkpoint, and returns its
cosignature of that checkpoint (C2SP tlog-cosignature).

Exactly once: a batch's entries are appended in one group commit, then the node's
record is updated. If the hub stops between the two, the node re-sends from the old
position; the re-sent entries carry the same ``(service, <node>:<id>)`` keys and the
sequencer answers them as duplicates, so nothing is stored twice. Only a node's
first batch after a start (or after a failed update) can be such a re-send, so only
that batch pays for the deduplication look-ups.

A node that breaks a promise of its log (bad signature, split view, rewritten
history, skipped indexes) or is silent for longer than ``federation_heartbeat``
seconds raises an alert: a ``federation.alert`` event in the hub's log, a stored
alert, a structured log line; the node is refused (403) until an admin reinstates
it (``auditfed node reset NAME`` or ``POST /v1/federation/nodes/{name}/reinstate``).
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter, Gauge

from auditfed.errors import Forbidden, InvalidInput, NotFound
from auditfed.event.model import format_time
from auditfed.federation.compact import CompactRange
from auditfed.federation.envelope import wrap
from auditfed.federation.protocol import Batch, Verified, Violation, decode_batch, verify_batch
from auditfed.federation.witness import cosign_now, load_witness
from auditfed.identity.tokens import Caller, TokenAuthority
from auditfed.ingest.prepare import Prepared, entry_row, prepare_event
from auditfed.ledger import Checkpoint, Verifier, verify_checkpoint
from auditfed.store.base import FederatedNodeRecord, Store

if TYPE_CHECKING:
    from auditfed.node import Node

log = logging.getLogger(__name__)

__all__ = ["Hub", "NodeRefused", "enrol_node", "reinstate_node"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_SELF = Caller("auditfed", "admin")
_TITLES = {
    "bad_signature": "checkpoint not signed by its enrolled key",
    "split_view": "inconsistent checkpoints (split view or rewritten history)",
    "rewritten": "entries do not match its signed checkpoint (rewritten history)",
    "skipped_indexes": "skipped log indexes",
    "silent": "silent past the heartbeat interval",
}


class NodeRefused(Forbidden):
    title = "Node refused"


def _now() -> str:
    return format_time(datetime.now(UTC))


def _epoch(value: str | None) -> float:
    return datetime.fromisoformat(value).timestamp() if value else 0.0


def enrol_node(store: Store, name: str, key: str) -> tuple[str, FederatedNodeRecord]:
    """Register a node's log verifier key; return a new ``node`` token bound to ``name``."""
    if not _NAME.match(name):
        raise InvalidInput("a node name is 1-64 letters, digits, '.', '_' or '-'")
    try:
        Verifier.from_key(key.strip())
    except ValueError as exc:
        raise InvalidInput(f"not a log verifier key: {exc}") from None
    if store.get_federation_node(name) is not None:
        raise InvalidInput(f"node {name!r} is already enrolled")
    now = _now()
    record = FederatedNodeRecord(name, key.strip(), "active", None, 0, b"", None, None, now, now)
    store.put_federation_node(record)
    token, _ = TokenAuthority(store).create("node", service=name, description=f"federation node {name}")
    return token, record


def reinstate_node(store: Store, name: str, *, rebaseline: bool = False) -> FederatedNodeRecord:
    """Lift a refusal. ``rebaseline`` also forgets what was verified of the node's log
    (for a node whose log had to be rebuilt): it starts again from index 0, and what the
    hub already holds is not stored twice."""
    record = store.get_federation_node(name)
    if record is None:
        raise NotFound(f"no node {name!r} is enrolled")
    now = _now()
    if rebaseline:
        record = replace(record, position=0, compact=b"", checkpoint=None)
    record = replace(record, status="active", reason=None, last_seen=now, updated_at=now)
    store.put_federation_node(record)
    return record


def node_summary(record: FederatedNodeRecord) -> dict[str, Any]:
    checkpoint = None
    if record.checkpoint:
        body = record.checkpoint.split("\n\n", 1)[0] + "\n"
        cp = Checkpoint.parse(body)
        checkpoint = {"size": cp.size, "root": cp.root.hex()}
    return {
        "node": record.name, "key": record.key, "status": record.status, "reason": record.reason,
        "position": record.position, "checkpoint": checkpoint, "last_seen": record.last_seen,
        "enrolled_at": record.enrolled_at,
    }


class Hub:
    """The hub's part of a running server."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.store = node.store
        self.cosigner = load_witness(node.settings.data_dir, node.origin)
        self.heartbeat = node.settings.federation_heartbeat
        self.started = time.time()
        self._locks: dict[str, asyncio.Lock] = {}
        #: Nodes whose stored record is known to match this log since this process
        #: started; the first batch of any other node is deduplicated (see above).
        self._trusted: set[str] = set()
        self._state = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="auditfed-federation-watch", daemon=True)
        r = node.metrics.registry
        self.received = Counter("auditfed_federation_received_entries",
                                "Node entries verified and appended at this hub", ["node"], registry=r)
        self.alerts = Counter("auditfed_federation_alerts", "Federation alerts raised at this hub",
                              ["node", "kind"], registry=r)
        self.positions = Gauge("auditfed_federation_node_position",
                               "Entries of each node held at this hub", ["node"], registry=r)

    # --- lifecycle ---
    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    # --- reading ---
    def record(self, name: str) -> FederatedNodeRecord:
        record = self.store.get_federation_node(name)
        if record is None:
            raise NotFound(f"no node {name!r} is enrolled at this hub")
        return record

    def position(self, name: str) -> dict[str, Any]:
        return node_summary(self.record(name))

    def witness_key(self) -> str:
        return self.cosigner.verifier_key()

    # --- receiving ---
    async def receive(self, name: str, body: object) -> dict[str, Any]:
        lock = self._locks.setdefault(name, asyncio.Lock())
        async with lock:
            record = self.record(name)
            if record.status != "active":
                raise NodeRefused(f"node {name!r} is refused until an admin reinstates it: {record.reason}",
                                  reason=record.reason)
            batch = decode_batch(body)
            dedup = name not in self._trusted
            try:
                verified, prepared = await asyncio.to_thread(self._check, record, batch, dedup)
            except Violation as violation:
                await asyncio.to_thread(self.raise_alert, name, violation.kind, violation.detail)
                raise
            duplicates = 0
            self._trusted.discard(name)
            if prepared:
                results = await self.node.sequencer.append(prepared)
                duplicates = sum(r.duplicate for r in results)
            line = cosign_now(verified.note, self.cosigner)
            await asyncio.to_thread(self._advance, name, verified)
            self._trusted.add(name)
        if verified.new_entries:
            self.received.labels(name).inc(len(verified.new_entries))
        self.positions.labels(name).set(verified.compact.size)
        return {
            "node": name,
            "position": verified.compact.size,
            "accepted": len(verified.new_entries) - duplicates,
            "duplicates": duplicates,
            "checkpoint_size": verified.checkpoint.size,
            "witness": self.cosigner.name,
            "cosignatures": [line],
        }

    def _check(
        self, record: FederatedNodeRecord, batch: Batch, dedup: bool
    ) -> tuple[Verified, list[Prepared]]:
        verifier = Verifier.from_key(record.key)
        compact = CompactRange.decode(record.position, record.compact)
        accepted = verify_checkpoint(record.checkpoint, verifier) if record.checkpoint else None
        verified = verify_batch(batch, verifier, compact, accepted)
        prepared = []
        for offset, (data, leaf) in enumerate(zip(verified.new_entries, verified.leaf_hashes, strict=True)):
            event, wrapped = wrap(data, record.name, verified.first + offset, leaf)
            prepared.append(Prepared(offset, entry_row(event, wrapped), fresh_id=not dedup))
        return verified, prepared

    def _advance(self, name: str, verified: Verified) -> None:
        with self._state:
            current = self.record(name)  # an admin or the watchdog may have acted meanwhile
            now = _now()
            self.store.put_federation_node(replace(
                current, position=verified.compact.size, compact=verified.compact.encode(),
                checkpoint=verified.note, last_seen=now, updated_at=now,
            ))

    # --- alerts ---
    def raise_alert(self, name: str, kind: str, detail: str) -> None:
        """Refuse the node, log a ``federation.alert`` event, store an alert, log a line."""
        with self._state:
            record = self.store.get_federation_node(name)
            if record is None or (record.status == "refused" and kind == "silent"):
                return
            now = _now()
            self.store.put_federation_node(
                replace(record, status="refused", reason=f"{kind}: {detail}", updated_at=now)
            )
        log.error("federation alert", extra={"node": name, "kind": kind, "detail": detail})
        self.alerts.labels(name, kind).inc()
        event = {
            "action": "federation.alert",
            "outcome": "failure",
            "actor": {"id": f"node:{name}", "type": "node"},
            "resource": {"type": "federation-node", "id": name},
            "source": {"service": "auditfed", "kind": "auditfed"},
            "reason": f"node {name}: {_TITLES.get(kind, kind)}",
            "attributes": {"node": name, "kind": kind, "detail": detail, "refused": True},
        }
        if self.node.settings.node_name:
            event["source"]["node"] = self.node.settings.node_name
        try:
            prepared = prepare_event(event, 0, _SELF, now)
            (sequenced,) = self.node.sequencer.submit([prepared]).result(timeout=30)
        except Exception:
            log.exception("could not log the federation alert", extra={"node": name})
            return
        self._store_alert(name, kind, detail, sequenced.index, now)

    def _store_alert(self, name: str, kind: str, detail: str, index: int, now: str) -> None:
        add_alerts = getattr(self.store, "add_alerts", None)
        if add_alerts is None:
            return
        try:
            from auditfed.store.base import AlertRecord

            alert = AlertRecord(
                alert_id=str(uuid.uuid4()), dedup_key=f"federation:{name}:{kind}:{index}",
                rule_id=f"auditfed.federation.{kind}", title=f"Federation node {name}: {_TITLES.get(kind, kind)}",
                level="critical", group={"node": name}, indexes=(index,), first_time=now,
                last_time=now, raised_at=now, log_index=index,
                details={"kind": kind, "detail": detail, "node": name, "type": "federation"},
            )
            add_alerts([alert], [])
        except Exception:
            log.exception("could not store the federation alert", extra={"node": name})

    def _watch(self) -> None:
        """Raise a ``silent`` alert for an active node not heard from for a heartbeat
        interval (counted from this hub's start: the hub's own downtime is no node's fault)."""
        interval = min(1.0, self.heartbeat / 4)
        while not self._stop.wait(interval):
            try:
                now = time.time()
                for record in self.store.federation_nodes():
                    if record.status != "active":
                        continue
                    heard = max(_epoch(record.last_seen), _epoch(record.enrolled_at), self.started)
                    if now - heard > self.heartbeat:
                        self.raise_alert(record.name, "silent",
                                         f"no batch or heartbeat for {now - heard:.0f} s "
                                         f"(heartbeat interval {self.heartbeat:g} s)")
            except Exception:
                log.exception("federation watch failed")
