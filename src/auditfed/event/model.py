"""The event model (DESIGN.md "The event") and its validation.

Producers send JSON objects; :func:`validate_event` checks them strictly (no type
coercion, unknown fields are errors, every error names its field path) and returns a
plain ``dict`` in canonical shape: times in UTC with microseconds, ``outcome``
defaulted, ``actor.verified`` and ``actor.verification_error`` removed so that a
producer can never claim them. The server adds ``observed_time`` and the source
binding afterwards; the ingest path moves a producer's other claims to server-owned
actor members into ``actor.claimed`` (:mod:`auditfed.identity.actors`).

The model is a tree of ``TypedDict`` classes so that validation yields plain dicts
(cheap to canonicalise) and the JSON Schema at ``GET /v1/schema/event`` is generated
from the same definitions.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal, NotRequired, Required

import uuid6
from pydantic import AfterValidator, ConfigDict, Field, TypeAdapter, ValidationError
from typing_extensions import TypedDict

from auditfed.errors import InvalidEvent

OUTCOMES = ("success", "failure", "denied", "unknown")

_STRICT = ConfigDict(extra="forbid", strict=True, str_max_length=8192)

ShortText = Annotated[str, Field(min_length=1, max_length=512)]
Text = Annotated[str, Field(max_length=8192)]
Action = Annotated[
    str,
    Field(min_length=1, max_length=256, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:/\-]*$"),
]


def _not_all_zero(value: str) -> str:
    # W3C Trace Context: an all-zero trace or span id is invalid.
    if not value.strip("0"):
        raise ValueError("an all-zero id is invalid (W3C Trace Context)")
    return value


TraceId = Annotated[str, Field(pattern=r"^[0-9a-f]{32}$"), AfterValidator(_not_all_zero)]
SpanId = Annotated[str, Field(pattern=r"^[0-9a-f]{16}$"), AfterValidator(_not_all_zero)]


def normalise_time(value: str) -> str:
    """RFC 3339 with an offset -> ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` in UTC.

    A fixed width makes the stored strings sort as times do, which the store's time
    index relies on.
    """
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError("not an RFC 3339 timestamp") from None
    if "T" not in value.upper() or parsed.tzinfo is None:
        raise ValueError("an RFC 3339 timestamp needs a date, a time and an offset (or Z)")
    if len(value) == 27 and value[10] == "T" and value[19] == "." and value[26] == "Z":
        return value  # already canonical: the common case, worth skipping the formatting
    try:
        return format_time(parsed)
    except OverflowError:  # e.g. 9999-12-31T23:59:59-01:00 is in year 10000 in UTC
        raise ValueError("the timestamp is outside years 1-9999 in UTC") from None


def format_time(moment: datetime) -> str:
    """``YYYY-MM-DDTHH:MM:SS.ffffffZ`` (isoformat is several times faster than strftime)."""
    utc = moment.astimezone(UTC) if moment.tzinfo is not UTC else moment
    return utc.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


Timestamp = Annotated[str, Field(max_length=64), AfterValidator(normalise_time)]


class Delegate(TypedDict, total=False):
    """One link of a delegation chain (RFC 8693 ``act``): who acted for the actor."""

    __pydantic_config__ = _STRICT
    id: Required[ShortText]
    type: ShortText
    issuer: ShortText
    principal: ShortText


Chain = Annotated[list[Delegate], Field(max_length=16)]


class Claimed(TypedDict, total=False):
    """What the producer said about the actor where only the server may speak: kept
    and shown, never verified, never indexed as the actor's principal."""

    __pydantic_config__ = _STRICT
    id: ShortText
    issuer: ShortText
    principal: ShortText
    token_id: ShortText
    chain: Chain


class Actor(TypedDict, total=False):
    __pydantic_config__ = _STRICT
    id: Required[ShortText]
    type: ShortText
    #: Server-owned: the verified token's issuer. A producer's value goes to ``claimed``.
    issuer: ShortText
    #: Server-owned: from the verified token or the server's directory, never the producer.
    principal: ShortText
    #: Server-owned: true only when auditfed verified ``token``; producers' value is dropped.
    verified: bool
    #: Why a presented token did not verify (server-owned).
    verification_error: ShortText
    #: A JWT the actor presented; verified at ingest and never stored (``token_id`` is).
    token: Annotated[str, Field(max_length=16384)]
    #: Server-owned: the verified token's ``jti`` or digest.
    token_id: ShortText
    #: Delegation: from the verified token, or relayed from a source record the server
    #: normalised (Kubernetes impersonation, CloudTrail session issuer); never from a
    #: producer's own event.
    chain: Chain
    #: The producer's claims to the server-owned members above (:class:`Claimed`).
    claimed: Claimed
    session: ShortText
    ip: ShortText
    user_agent: Text


class Resource(TypedDict, total=False):
    __pydantic_config__ = _STRICT
    type: ShortText
    id: Text
    name: Text


class Source(TypedDict, total=False):
    __pydantic_config__ = _STRICT
    service: Required[ShortText]
    environment: ShortText
    kind: ShortText
    node: ShortText
    host: ShortText
    region: ShortText
    account: ShortText


class Trace(TypedDict, total=False):
    __pydantic_config__ = _STRICT
    trace_id: Required[TraceId]
    span_id: SpanId
    parent_span_id: SpanId


class Policy(TypedDict, total=False):
    __pydantic_config__ = _STRICT
    decision: Required[Literal["allow", "deny"]]
    rule: Text
    enforcer: ShortText
    reason: Text


class EventInput(TypedDict, total=False):
    """An audit event as a producer sends it (DESIGN.md "The event")."""

    __pydantic_config__ = _STRICT
    id: Annotated[str, Field(min_length=1, max_length=256)]
    time: Timestamp
    observed_time: Timestamp
    action: Required[Action]
    outcome: Literal["success", "failure", "denied", "unknown"]
    actor: Required[Actor]
    resource: Resource
    source: NotRequired[Source]
    trace: Trace
    request_id: ShortText
    reason: Text
    policy: Policy
    attributes: dict[str, Any]
    original: dict[str, Any]


_ADAPTER: TypeAdapter[EventInput] = TypeAdapter(EventInput)
_BATCH_ADAPTER: TypeAdapter[list[EventInput]] = TypeAdapter(list[EventInput])


def validate_event(obj: Any, *, position: int | None = None) -> dict[str, Any]:
    """Validate one producer event; return it as a plain dict in canonical shape.

    Raises :class:`InvalidEvent` whose ``errors`` list every problem as
    ``{"path": "actor.id", "reason": "..."}``. ``position`` (the item's place in the
    request) is added to each error so that batch callers can name the item.
    """
    if not isinstance(obj, dict):
        raise InvalidEvent(
            "an event must be a JSON object",
            [_error(position, "", f"expected an object, got {_json_type(obj)}")],
        )
    try:
        event: dict[str, Any] = _ADAPTER.validate_python(obj)  # type: ignore[assignment]
    except ValidationError as exc:
        errors = [
            _error(position, ".".join(str(p) for p in e["loc"]), _reason(e["msg"]))
            for e in exc.errors(include_url=False)
        ]
        raise InvalidEvent(_summary(errors), errors) from None
    return _canonical_shape(event)


def validate_events(objs: list[Any]) -> list[dict[str, Any]] | None:
    """Validate a whole batch of producer events in one call; ``None`` if any is invalid.

    One call for the batch spares pydantic's per-call overhead (about a fifth of the
    validation time of a typical event). It says nothing about *which* item failed:
    on ``None`` the caller validates item by item with :func:`validate_event`, which
    names every problem.
    """
    try:
        events: list[dict[str, Any]] = _BATCH_ADAPTER.validate_python(objs)  # type: ignore[assignment]
    except ValidationError:
        return None
    return [_canonical_shape(event) for event in events]


def _canonical_shape(event: dict[str, Any]) -> dict[str, Any]:
    """Default ``outcome``; drop the server-owned fields a producer may not claim."""
    event.setdefault("outcome", "unknown")
    actor = event["actor"]
    actor.pop("verified", None)
    actor.pop("verification_error", None)
    return event


def new_event_id() -> str:
    """A server-assigned id for an event that came without one (UUIDv7: time-ordered)."""
    return str(uuid6.uuid7())


def event_json_schema() -> dict[str, Any]:
    schema = _ADAPTER.json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://auditfed.dev/schema/event.json"
    return schema


def _error(position: int | None, path: str, reason: str) -> dict[str, Any]:
    error: dict[str, Any] = {"path": path or "$", "reason": reason}
    if position is not None:
        error["item"] = position
    return error


def _reason(message: str) -> str:
    return message.removeprefix("Value error, ")


def _summary(errors: list[dict[str, Any]]) -> str:
    first = errors[0]
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{first['path']}: {first['reason']}{more}"


def _json_type(value: Any) -> str:
    return {
        list: "array", str: "string", int: "number", float: "number",
        bool: "boolean", type(None): "null",
    }.get(type(value), type(value).__name__)
