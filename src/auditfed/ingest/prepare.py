"""Preparing one event for the log: validate, bind to the sender, canonicalise.

The sender's credential is the authority on ``source``: a ``source`` token's service
(and environment, when the token names one) is written into the event, and an event
that claims another is refused. Server-owned fields are set here: ``observed_time``,
``id`` when the producer sent none, and ``actor.verified``.

A prepared event carries its canonical bytes (the leaf data, RFC 8785) and leaf hash,
so that the sequencer's critical section only assigns indexes and writes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from auditfed.errors import EventTooLarge, Forbidden, InvalidEvent
from auditfed.event import (
    canonical_event_bytes,
    new_event_id,
    validate_event,
    validate_events,
)
from auditfed.identity.tokens import Caller
from auditfed.ingest.body import BadItem
from auditfed.ledger.hashing import leaf_hash
from auditfed.store.base import EntryRow
from auditfed.store.filters import index_key

#: A stage that may rewrite a validated event before it is canonicalised
#: (identity verification and resolution, redaction).
Enricher = Callable[[dict[str, Any]], dict[str, Any]]


class Prepared(NamedTuple):
    """An event ready for the sequencer (a named tuple: it crosses processes in bulk)."""

    position: int
    row: EntryRow
    #: The id was assigned here, so it cannot be a duplicate of anything stored.
    fresh_id: bool


@dataclass(slots=True)
class PreparedBatch:
    """The items of one request judged one by one: prepared events, or errors."""

    prepared: list[Prepared]
    #: One per item, in order: filled for rejected items, ``{}`` for prepared ones
    #: (the sequencer's answer fills those).
    results: list[dict[str, Any]]
    #: Validation errors, ``{"item", "path", "reason"}`` (also for unparsable items).
    errors: list[dict[str, Any]] = field(default_factory=list)
    #: What a source decoder reported besides its events (positions, skipped
    #: records, record errors): see :meth:`auditfed.sources.Decoded.without_events`.
    decoded: Any = None

    def __reduce__(self) -> tuple[Any, ...]:
        # Batches come back from ingest workers: plain tuples pickle about three
        # times faster than named tuples (no class reference per row).
        flat = [(p.position, p.fresh_id, *p.row) for p in self.prepared]
        return _unflatten, (flat, self.results, self.errors, self.decoded)


def _unflatten(
    flat: list[tuple[Any, ...]], results: list[dict[str, Any]], errors: list[dict[str, Any]],
    decoded: Any,
) -> PreparedBatch:
    make_row = EntryRow._make
    prepared = [Prepared(f[0], make_row(f[2:]), f[1]) for f in flat]
    return PreparedBatch(prepared, results, errors, decoded)


def prepare_items(
    items: list[Any],
    caller: Caller,
    observed_time: str,
    enrichers: tuple[Enricher, ...] = (),
    max_event_bytes: int | None = None,
) -> PreparedBatch:
    """Prepare every item of a request; a bad item is rejected on its own.

    An event whose canonical bytes (what the log would store) are over
    ``max_event_bytes`` is rejected with an error of ``"status": 413``. A source
    claiming another service raises :class:`~auditfed.errors.Forbidden` for the whole
    batch.
    """
    batch = PreparedBatch([], [{} for _ in items])
    # One validation call for the whole batch; item by item (naming each problem)
    # only when some item is bad.
    valid = validate_events(items)
    for position, item in enumerate(items):
        if isinstance(item, BadItem):
            batch.errors.append({"item": position, "path": "$", "reason": item.reason})
            batch.results[position] = _rejected(None, item.reason)
            continue
        try:
            event = validate_event(item, position=position) if valid is None else valid[position]
            prepared = prepare_valid_event(event, position, caller, observed_time, enrichers)
            if max_event_bytes is not None and len(prepared.row.data) > max_event_bytes:
                raise EventTooLarge(f"the event is {len(prepared.row.data)} bytes of canonical JSON; "
                                    f"the limit is {max_event_bytes} (max_event_bytes)")
            batch.prepared.append(prepared)
        except InvalidEvent as exc:
            errors = exc.errors or [{"item": position, "path": "$", "reason": exc.detail}]
            if exc.status != InvalidEvent.status:
                errors = [{**error, "status": exc.status} for error in errors]
            batch.errors.extend(errors)
            batch.results[position] = _rejected(item, exc.detail)
    return batch


def _rejected(item: Any, reason: str) -> dict[str, Any]:
    event_id = item.get("id") if isinstance(item, dict) else None
    return {
        "id": event_id if isinstance(event_id, str) else None,
        "index": None,
        "status": "rejected",
        "error": reason,
    }


def bind_source(event: dict[str, Any], caller: Caller, position: int) -> None:
    """Write the caller's service/environment into ``event.source`` (or refuse)."""
    source = event.get("source")
    if caller.role != "source":
        if not source or not source.get("service"):
            raise InvalidEvent(
                "source.service is required",
                [{"item": position, "path": "source.service", "reason": "required"}],
            )
        return
    source = event.setdefault("source", {"service": caller.service})
    for name in ("service", "environment"):
        bound = getattr(caller, name)
        if bound is None:
            continue
        claimed = source.get(name)
        if claimed is not None and claimed != bound:
            raise Forbidden(
                f"item {position}: source.{name} {claimed!r} is not this token's {name} "
                f"{bound!r}",
                item=position,
            )
        source[name] = bound
    workload = caller.workload
    if workload is not None and event["actor"]["id"] in (workload.pipeline, workload.subject):
        # The workload's own token proves who this actor is (and, for a CI pipeline,
        # the person who triggered it, in the chain).
        event["actor"].update(workload.actor_fields())


def prepare_event(
    obj: Any,
    position: int,
    caller: Caller,
    observed_time: str,
    enrichers: tuple[Enricher, ...] = (),
) -> Prepared:
    event = validate_event(obj, position=position)
    return prepare_valid_event(event, position, caller, observed_time, enrichers)


def prepare_valid_event(
    event: dict[str, Any],
    position: int,
    caller: Caller,
    observed_time: str,
    enrichers: tuple[Enricher, ...] = (),
) -> Prepared:
    """:func:`prepare_event` for an event :func:`~auditfed.event.validate_event` passed."""
    bind_source(event, caller, position)
    event["observed_time"] = observed_time
    event.setdefault("time", observed_time)
    fresh_id = "id" not in event
    if fresh_id:
        event["id"] = new_event_id()
    for enrich in enrichers:
        event = enrich(event)
    _never_store_raw_tokens(event)
    data = canonical_event_bytes(event)
    return Prepared(position, entry_row(event, data), fresh_id)


def _never_store_raw_tokens(event: dict[str, Any]) -> None:
    # The identity stage consumes presented tokens; without one, a token is dropped
    # unread: a bearer credential must never reach the log.
    actor = event["actor"]
    if actor.pop("token", None) is not None:
        actor["verified"] = False
        actor.setdefault("verification_error", "no trusted issuer is configured")


def entry_row(event: dict[str, Any], data: bytes) -> EntryRow:
    """The store row for an event whose canonical bytes are ``data``."""
    actor = event["actor"]
    resource = event.get("resource") or {}
    source = event["source"]
    trace = event.get("trace")
    trace_id = trace["trace_id"] if trace else None
    return EntryRow(
        data=data,
        leaf_hash=leaf_hash(data),
        service=source["service"],
        event_id=event["id"],
        time=event["time"],
        action=event["action"],
        actor=actor["id"],
        principal=actor.get("principal"),
        resource=resource.get("id"),
        trace_id=trace_id,
        environment=source.get("environment"),
        outcome=event["outcome"],
        id_key=index_key(event["id"]),
        trace_key=None if trace_id is None else index_key(trace_id),
    )
