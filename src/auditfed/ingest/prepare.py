"""Preparing one event for the log: validate, bind to the sender, canonicalise.

The sender's credential is the authority on ``source``: a ``source`` token's service
(and environment, when the token names one) is written into the event, and an event
that claims another is refused. Server-owned fields are set here: ``observed_time``,
``id`` when the producer sent none, and ``actor.verified``; a producer's values of the
other server-owned actor members are moved to ``actor.claimed``
(:func:`auditfed.identity.actors.separate_claims`). The events the server writes
itself (``source.service``/``source.kind`` ``auditfed``, ``federation``) are reserved:
no token, admin included, may send one (403).

A prepared event carries its canonical bytes (the leaf data, RFC 8785) and leaf hash,
so that the sequencer's critical section only assigns indexes and writes. Before it
is hashed, every string of an event is cleared of the secrets recognised by their value
(:mod:`auditfed.sources.secrets`), after the key and path rules (an enricher).
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
from auditfed.identity.actors import apply_verified, separate_claims
from auditfed.identity.tokens import Caller
from auditfed.ingest.body import BadItem
from auditfed.ledger.hashing import leaf_hash
from auditfed.sources.secrets import may_hold_secret, redact_values
from auditfed.store.base import EntryRow
from auditfed.store.filters import index_key

#: A stage that may rewrite a validated event before it is canonicalised
#: (identity verification and resolution, redaction).
Enricher = Callable[[dict[str, Any]], dict[str, Any]]

#: ``source.service`` of the events the server writes itself (meta-audit, alerts).
RESERVED_SERVICE = "auditfed"
#: ``source.kind`` values only the server writes (its own events; a hub's records of
#: what its nodes sent).
RESERVED_KINDS = frozenset({"auditfed", "federation"})


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
    *,
    relayed_chain: bool = False,
) -> PreparedBatch:
    """Prepare every item of a request; a bad item is rejected on its own.

    An event whose canonical bytes (what the log would store) are over
    ``max_event_bytes`` is rejected with an error of ``"status": 413``. A source
    claiming another service, or any caller writing as the server itself, raises
    :class:`~auditfed.errors.Forbidden` for the whole batch. ``relayed_chain``: the
    items are a normaliser's, whose ``actor.chain`` the source record attested.
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
            separate_claims(event["actor"], position, relayed_chain=relayed_chain)
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
        apply_verified(event["actor"], workload.actor_fields())


def refuse_reserved_source(source: dict[str, Any], position: int) -> None:
    """403 for an event that would pass for one the server wrote itself."""
    for name, reserved in (("service", source.get("service") == RESERVED_SERVICE),
                           ("kind", source.get("kind") in RESERVED_KINDS)):
        if reserved:
            raise Forbidden(
                f"item {position}: source.{name} {source[name]!r} is reserved for the events "
                f"auditfed writes itself; send your events as your own service and kind",
                item=position, field=f"source.{name}",
            )


def prepare_event(
    obj: Any,
    position: int,
    caller: Caller,
    observed_time: str,
    enrichers: tuple[Enricher, ...] = (),
    *,
    own: bool = False,
) -> Prepared:
    """Prepare one event the server made. ``own``: an event of the server itself (its
    reserved ``source``); anything else is checked as a producer's would be."""
    event = validate_event(obj, position=position)
    return prepare_valid_event(event, position, caller, observed_time, enrichers, own=own)


def prepare_valid_event(
    event: dict[str, Any],
    position: int,
    caller: Caller,
    observed_time: str,
    enrichers: tuple[Enricher, ...] = (),
    *,
    own: bool = False,
) -> Prepared:
    """:func:`prepare_event` for an event :func:`~auditfed.event.validate_event` passed."""
    bind_source(event, caller, position)
    if not own:
        refuse_reserved_source(event["source"], position)
    event["observed_time"] = observed_time
    event.setdefault("time", observed_time)
    fresh_id = "id" not in event
    if fresh_id:
        event["id"] = new_event_id()
    for enrich in enrichers:
        event = enrich(event)
    _never_store_raw_tokens(event)
    data = canonical_event_bytes(event)
    if may_hold_secret(data):
        # secrets recognised by value, in any string (every source, the server's own
        # events too): checked on the bytes made anyway, so a clean event costs one scan
        cleaned = redact_values(event)
        if cleaned is not event:
            event, data = cleaned, canonical_event_bytes(cleaned)
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
