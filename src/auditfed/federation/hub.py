"""The hub side of federation: enrolment, verification of node batches, witnessing, alerts.

Every auditfed server can be a hub: it becomes one for a node once an admin enrols
the node (``auditfed node add NAME --key VKEY``), which issues a ``node`` token
bound to the name. For each batch a node sends, the hub checks it
(:mod:`~auditfed.federation.protocol`), appends the new entries to its
own log wrapped with their origin (:mod:`~auditfed.federation.envelope`), then
records the node's new position, compact range and checkpoint, and returns its
cosignature of that checkpoint (C2SP tlog-cosignature).

Exactly once: a batch's entries are appended in one group commit, then the node's
record is updated. If the hub stops between the two, the node re-sends from the old
position; the re-sent entries carry the same ``(service, <node>:<id>)`` keys and the
sequencer answers them as duplicates, so nothing is stored twice. Only the batches a
node sends after a start (or after a failed update) until one of them is recorded
can be such a re-send, so only they pay for the deduplication look-ups.

The CPU-heavy part of a batch (:func:`prepare_batch`) runs in an ingest worker
process, for all batches in flight at once; only the checks against the node's state
(:func:`~auditfed.federation.protocol.verify_extension`) take turns. A node may send
its next batch before the previous one is answered: it is checked while the previous
one is appended, and one write may record several batches (:class:`_Lane`).

A node that breaks a promise of its log (bad signature, split view, rewritten
history, skipped indexes) or is silent for longer than ``federation_heartbeat``
seconds raises an alert: a ``federation.alert`` event in the hub's log, a stored
alert, a structured log line; the node is refused (403) until an admin reinstates
it (``auditfed node reset NAME`` or ``POST /v1/federation/nodes/{name}/reinstate``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter, Gauge

from auditfed.errors import Forbidden, InvalidInput, NotFound, Unavailable
from auditfed.event.model import format_time
from auditfed.federation.compact import CompactRange
from auditfed.federation.envelope import wrap
from auditfed.federation.protocol import Signed, Violation, parse_batch, verify_extension, verify_signed
from auditfed.federation.witness import cosign_now, load_witness
from auditfed.identity.tokens import Caller, TokenAuthority
from auditfed.ingest.prepare import Prepared, entry_row, prepare_event
from auditfed.ledger import Checkpoint, Verifier, verify_checkpoint
from auditfed.store.base import EntryRow, FederatedNodeRecord, Store

if TYPE_CHECKING:
    from concurrent.futures import Future

    from auditfed.ingest.sequencer import Sequenced
    from auditfed.node import Node

log = logging.getLogger(__name__)

__all__ = ["Hub", "NodeBatch", "NodeRefused", "enrol_node", "prepare_batch", "reinstate_node"]

#: Longest a batch sent behind another one of its node waits for that one (see _Lane).
FOLLOW_WAIT = 5.0
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


@dataclass(frozen=True, slots=True)
class NodeBatch:
    """A node's batch as a worker prepares it for the hub (:func:`prepare_batch`)."""

    signed: Signed
    #: This log's store rows for its entries (:class:`EntryRow` fields as plain tuples:
    #: they come back from a worker process, and plain tuples pickle several times
    #: faster than named ones).
    rows: list[tuple[Any, ...]]


def prepare_batch(name: str, key: str, body: bytes) -> NodeBatch:
    """Decode a batch of node ``name``, check its checkpoint's signature with the node's
    key, and make its entries rows of this log.

    This is the CPU-heavy part of a batch (JSON, base64, SHA-256, Ed25519, the
    envelope, RFC 8785 bytes). It does not depend on what the hub holds of the node, so
    the hub runs it in an ingest worker process
    (:meth:`~auditfed.ingest.workers.Preparer.call`) for every batch in flight at once,
    off the interpreter lock of the sequencer; only the checks against the node's
    state (:func:`~auditfed.federation.protocol.verify_extension`) wait their turn.
    """
    batch = parse_batch(body)
    signed = verify_signed(batch, Verifier.from_key(key))
    entries = zip(batch.entries, signed.leaf_hashes, strict=True)
    rows = [tuple(entry_row(*wrap(data, name, batch.start + offset, leaf)))
            for offset, (data, leaf) in enumerate(entries)]
    return NodeBatch(signed, rows)


@dataclass(frozen=True, slots=True)
class Checked:
    """A batch checked against what the hub holds of its node: that state once the
    batch is recorded, and the rows of its new entries."""

    compact: CompactRange
    checkpoint: Checkpoint
    note: str
    rows: list[tuple[Any, ...]]
    #: The entries may be in this log already (the sequencer looks them up).
    dedup: bool
    #: The node's position the batch was checked against (where its record must
    #: still be when the batch is recorded).
    extends: int

    def prepared(self) -> list[Prepared]:
        make_row, fresh = EntryRow._make, not self.dedup
        return [Prepared(offset, make_row(row), fresh) for offset, row in enumerate(self.rows)]


@dataclass(slots=True)
class _InFlight:
    """A batch checked and not yet recorded."""

    batch: Checked
    #: Resolves once its entries are durable (None: it has no new entries).
    committed: Future[list[Sequenced]] | None
    #: Resolves once the node's record covers it (or fails with what failed).
    recorded: asyncio.Future[None]

    def ready(self) -> bool:
        """Its entries are committed (so the record may cover it)."""
        return self.committed is None or (self.committed.done() and self.committed.exception() is None)


class _Lane:
    """One node's batches at the hub, from their check to the record of the node's
    state after them.

    Batches are checked one at a time (in the event loop, without awaiting), each
    against the state the batches before it leave; their entries are queued for the
    sequencer in the same order, and one recorder per node records the node's new
    state once they are committed, oldest first, covering with one durable write all
    that are committed by then.

    A node may send its next batch before the hub answers the previous one, so that it
    is prepared and checked while the previous one is appended. Such a batch says so
    (``follows``, its start) and waits for the batch before it to be checked instead of
    being taken for skipped indexes; if that one does not come within ``FOLLOW_WAIT``
    or a batch of the node fails meanwhile, it fails too, without an alert (503: the
    node re-sends from the hub's position). A batch that does not say so is checked
    against what is there, so skipping indexes is still detected.
    """

    __slots__ = ("_changed", "failures", "queue", "recorder")

    def __init__(self) -> None:
        #: Batches checked and not yet recorded, in order.
        self.queue: deque[_InFlight] = deque()
        #: Counts the node's batches that failed: a batch waiting for the one before it
        #: then gives up.
        self.failures = 0
        self.recorder: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()

    @property
    def tail(self) -> Checked | None:
        """The latest batch checked (None: the stored record is current)."""
        return self.queue[-1].batch if self.queue else None

    def _signal(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_until(self, start: int, checked: Callable[[], int]) -> None:
        """Wait until the batches checked reach ``start``, a batch fails, or
        ``FOLLOW_WAIT`` passes."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + FOLLOW_WAIT
        failures = self.failures
        while checked() < start and self.failures == failures and loop.time() < deadline:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), deadline - loop.time())

    def add(self, batch: Checked, committed: Future[list[Sequenced]] | None) -> _InFlight:
        flight = _InFlight(batch, committed, asyncio.get_running_loop().create_future())
        self.queue.append(flight)
        self._signal()
        return flight

    def committed_head(self) -> list[_InFlight]:
        """The batches at the head of the queue whose entries are committed."""
        group = []
        for flight in self.queue:
            if not flight.ready():
                break
            group.append(flight)
        return group

    def recorded(self, count: int) -> None:
        """The first ``count`` batches are recorded."""
        for _ in range(count):
            _settle(self.queue.popleft().recorded)

    def note_failure(self) -> None:
        """A batch of the node failed: those waiting for the one before them give up."""
        self.failures += 1
        self._signal()

    def fail_in_flight(self, error: BaseException) -> None:
        """Fail every batch in flight: the next one is checked against the stored record."""
        while self.queue:
            _settle(self.queue.popleft().recorded, error)
        self.note_failure()


def _settle(future: asyncio.Future[None], error: BaseException | None = None) -> None:
    """Resolve a batch's future, unless its request is gone (cancelled) meanwhile."""
    if future.done():
        return
    if error is None:
        future.set_result(None)
    elif isinstance(error, Exception):
        future.set_exception(error)
    else:
        future.cancel()


class Hub:
    """The hub's part of a running server."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.store = node.store
        self.cosigner = load_witness(node.settings.data_dir, node.origin)
        self.heartbeat = node.settings.federation_heartbeat
        self.started = time.time()
        self._lanes: dict[str, _Lane] = {}
        #: Nodes whose stored record is known to match this log since this process
        #: started; the first batches of any other node are deduplicated (see above).
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
    async def receive(self, name: str, body: bytes, follows: int | None = None) -> dict[str, Any]:
        """Verify and append one batch (the raw request body) of node ``name``.

        ``follows`` (header ``Auditfed-Follows``): the batch's start, sent while the
        node's batch ending there is still in flight (see :class:`_Lane`).
        """
        try:
            return await self._receive(name, body, follows)
        except Violation as violation:
            await asyncio.to_thread(self.raise_alert, name, violation.kind, violation.detail)
            raise

    async def _receive(self, name: str, body: bytes, follows: int | None) -> dict[str, Any]:
        key = self._active(name).key
        lane = self._lanes.setdefault(name, _Lane())
        try:
            node_batch = await self.node.preparer.call(prepare_batch, name, key, body)
            if follows is not None:
                await lane.wait_until(follows, lambda: self._checked_position(lane, name))
            batch = self._check(lane, name, node_batch, follows)
        except BaseException:
            lane.note_failure()
            raise
        # Queued at once, in the order checked: the node's entries reach this log in its
        # order, and a batch is committed while the one before it is recorded.
        flight = lane.add(batch, self.node.sequencer.submit(batch.prepared()) if batch.rows else None)
        if lane.recorder is None or lane.recorder.done():
            lane.recorder = asyncio.create_task(self._record(lane, name))
        await flight.recorded
        duplicates = sum(r.duplicate for r in flight.committed.result()) if flight.committed else 0
        if batch.rows:
            self.received.labels(name).inc(len(batch.rows))
        self.positions.labels(name).set(batch.compact.size)
        return {
            "node": name,
            "position": batch.compact.size,
            "accepted": len(batch.rows) - duplicates,
            "duplicates": duplicates,
            "checkpoint_size": batch.checkpoint.size,
            "witness": self.cosigner.name,
            "cosignatures": [cosign_now(batch.note, self.cosigner)],
        }

    def _active(self, name: str) -> FederatedNodeRecord:
        record = self.record(name)
        if record.status != "active":
            raise NodeRefused(f"node {name!r} is refused until an admin reinstates it: {record.reason}",
                              reason=record.reason)
        return record

    def _checked_position(self, lane: _Lane, name: str) -> int:
        """Entries of the node the hub holds or has checked (in flight)."""
        return lane.tail.compact.size if lane.tail is not None else self.record(name).position

    def _check(self, lane: _Lane, name: str, node_batch: NodeBatch, follows: int | None) -> Checked:
        """Check a batch against the node's state after the batches in flight."""
        record = self._active(name)
        if lane.tail is not None:
            compact, accepted = lane.tail.compact, lane.tail.checkpoint
        else:
            compact = CompactRange.decode(record.position, record.compact)
            accepted = (verify_checkpoint(record.checkpoint, Verifier.from_key(record.key))
                        if record.checkpoint else None)
        if follows is not None and compact.size < follows:
            raise Unavailable(f"the batch before index {follows} did not arrive or failed; "
                              "send again from the hub's position")
        signed = node_batch.signed
        skip, rebuilt = verify_extension(signed, compact, accepted)
        return Checked(rebuilt, signed.checkpoint, signed.note, node_batch.rows[skip:],
                       name not in self._trusted, compact.size)

    async def _record(self, lane: _Lane, name: str) -> None:
        """Record the node's state after its batches in flight as their entries are
        committed, oldest first; if a commit or a record fails, every batch in flight
        fails with it (and the next ones are deduplicated)."""
        try:
            while lane.queue:
                head = lane.queue[0].committed
                if head is not None:
                    await asyncio.wrap_future(head)
                group = lane.committed_head()
                if not await asyncio.to_thread(self._advance, name, group[0].batch.extends, group[-1].batch):
                    raise Unavailable("the node's record changed while its batches were in flight "
                                      "(an admin acted); send again from the hub's position")
                self._trusted.add(name)
                lane.recorded(len(group))
        except BaseException as exc:
            self._trusted.discard(name)
            lane.fail_in_flight(exc)
            if not isinstance(exc, Exception):
                raise

    def _advance(self, name: str, expected: int, batch: Checked) -> bool:
        """Record the node's state after ``batch``, if its record is still at ``expected``
        (an admin may have re-baselined it meanwhile; a refusal is kept as it is)."""
        with self._state:  # not between an alert's read and write of the record
            return self.store.advance_federation_node(
                name, expected, batch.compact.size, batch.compact.encode(), batch.note, _now())

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
            prepared = prepare_event(event, 0, _SELF, now, own=True)
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
