"""Shared plumbing of the source decoders: results, errors and tolerant JSON readers.

Every decoder turns one request body into a :class:`Decoded`: per source record, in
input order, either a normalised event dict (the canonical event of DESIGN.md, "The
event") or a :class:`RecordError` naming the record's position. One broken record never
spoils the good ones; only a body that cannot be read at all raises
:class:`~auditfed.errors.InvalidInput`.

JSON bodies may be one object, a JSON array (RFC 8259), a wrapper object holding an
array (CloudTrail ``Records``, Kubernetes ``EventList.items``) or NDJSON (one JSON text
per line). When a JSON array does not parse as a whole, :func:`split_json_array` splits
it element by element so that a syntax error is confined to its record.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from auditfed.errors import InvalidInput, PayloadTooLarge
from auditfed.event import strict_json


@dataclass(frozen=True, slots=True)
class RecordError:
    """A source record that could not be turned into an event.

    ``position`` is the record's 0-based place in the request: the array index for JSON
    arrays, the line index for NDJSON and text logs (the first line of a multi-line
    entry), the log record's index across the whole OTLP request.
    """

    position: int
    message: str


Item = dict[str, Any] | RecordError

#: Records one request may hold (``max_events_per_request``), set by
#: :func:`auditfed.sources.decode` around the decoder it calls: a body of millions of tiny
#: bad records then stops at the limit with a 413 instead of costing a worker minutes
#: and gigabytes of error records that would be refused anyway.
MAX_RECORDS: ContextVar[int | None] = ContextVar("max_records", default=None)


@dataclass(slots=True)
class Decoded:
    """The outcome of decoding one request body."""

    format: str
    #: Per record, in input order: a normalised event dict or a :class:`RecordError`.
    items: list[Item] = field(default_factory=list)
    #: 0-based source position of each item (same length as ``items``).
    positions: list[int] = field(default_factory=list)
    #: Records deliberately not turned into events (earlier Kubernetes audit stages,
    #: PostgreSQL log lines that are not pgaudit ``AUDIT:`` messages).
    skipped: int = 0
    #: For OTLP: ``True`` when the request used the JSON encoding (answer in kind).
    otlp_json: bool = False
    #: At most this many items (see :data:`MAX_RECORDS`); ``None``: no limit.
    limit: int | None = field(default_factory=MAX_RECORDS.get, repr=False, compare=False)

    @property
    def events(self) -> list[dict[str, Any]]:
        return [item for item in self.items if not isinstance(item, RecordError)]

    @property
    def errors(self) -> list[RecordError]:
        return [item for item in self.items if isinstance(item, RecordError)]

    def without_events(self) -> Decoded:
        """This outcome with each event replaced by ``None``: what a request's answer
        needs (positions, skipped, errors) once the events went to the pipeline."""
        items: list[Any] = [i if isinstance(i, RecordError) else None for i in self.items]
        return Decoded(self.format, items, self.positions, self.skipped, self.otlp_json)

    def add(self, position: int, item: Item) -> None:
        check_record_count(len(self.items) + 1, self.limit)
        self.items.append(item)
        self.positions.append(position)

    def error(self, position: int, message: str) -> None:
        self.add(position, RecordError(position, message))


def check_record_count(count: int, limit: int | None) -> None:
    """Refuse (413) a request body once it holds more than ``limit`` records."""
    if limit is not None and count > limit:
        raise PayloadTooLarge(
            f"more than {limit} records in one request; the limit is {limit} "
            "(max_events_per_request): send them in smaller requests"
        )


class UnsupportedContentType(InvalidInput):
    """The body's media type is not one the format accepts (HTTP 415)."""

    status = 415
    title = "Unsupported media type"


class RecordProblem(ValueError):
    """Raised by a normaliser for a record it cannot map; becomes a RecordError."""


# --- JSON readers -------------------------------------------------------------------

Parsed = tuple[int, Any | RecordError]


def media_type(content_type: str | None) -> str:
    if not content_type:
        return ""
    return content_type.split(";", 1)[0].strip().lower()


def read_json_records(
    body: bytes,
    *,
    what: str,
    unwrap: Callable[[Any], list[Any] | None] | None = None,
    wrapper_key: str | None = None,
) -> list[Parsed]:
    """Split a JSON / JSON array / wrapper / NDJSON body into ``(position, record)``.

    ``unwrap`` maps a parsed top-level object to its list of records (or ``None`` when
    the object is itself one record). ``wrapper_key`` names the array key of a wrapper
    object so that a wrapper that fails to parse can still be split record by record.
    """
    text = body.strip()
    if not text:
        raise InvalidInput(f"empty body: expected {what}")
    try:
        whole = strict_json.loads(text)
    except strict_json.NotIJSON as exc:
        if exc.item is None:  # not one record of an array: the body as a whole
            raise InvalidInput(f"body is not {what}: {exc}") from None
        return _salvage(text, what, wrapper_key, exc)
    except orjson.JSONDecodeError as exc:
        return _salvage(text, what, wrapper_key, exc)
    return list(enumerate(_records_of(whole, unwrap, what)))


def _records_of(
    whole: Any, unwrap: Callable[[Any], list[Any] | None] | None, what: str
) -> list[Any]:
    if isinstance(whole, list):
        return whole
    if isinstance(whole, dict):
        inner = unwrap(whole) if unwrap else None
        return [whole] if inner is None else inner
    raise InvalidInput(f"expected {what} (a JSON object, array or NDJSON), got a JSON scalar")


def _salvage(text: bytes, what: str, wrapper_key: str | None, exc: Exception) -> list[Parsed]:
    """A body that is not one JSON text: an array/wrapper with broken items, or NDJSON."""
    head = [line.strip() for line in text.split(b"\n", 4)[:4]]
    looks_ndjson = len(head) > 1 and any(_parses(line) for line in head if line)
    start = None if looks_ndjson else _array_start(text, wrapper_key)
    limit = MAX_RECORDS.get()
    if start is not None:
        out: list[Parsed] = []
        position = 0
        for offset, chunk in split_json_array(text, start):
            check_record_count(position + 1, limit)
            try:
                out.append((position, strict_json.loads(chunk)))
                position += 1
                continue
            except strict_json.NotIJSON as err:  # a whole element, but refused
                out.append((position, RecordError(position, f"not I-JSON: {err}")))
                position += 1
                continue
            except orjson.JSONDecodeError as err:
                first_error = err
            # a broken element may have swallowed its neighbours (an unclosed bracket):
            # split again where the next element starts at the same indentation
            for piece in _resync(text, offset, chunk):
                try:
                    out.append((position, _loads_tail(piece)))
                except orjson.JSONDecodeError as err:
                    error = first_error if piece is chunk else err
                    out.append((position, RecordError(position, f"invalid JSON: {error}")))
                position += 1
        if out and any(not isinstance(record, RecordError) for _, record in out):
            return out
        if out and len(out) > 1:
            return out
    lines = text.split(b"\n")
    if len(lines) > 1:
        out = []
        good = 0
        for position, line in enumerate(lines):
            line = line.strip()
            if not line:
                continue
            check_record_count(len(out) + 1, limit)
            try:
                out.append((position, strict_json.loads(line)))
                good += 1
            except orjson.JSONDecodeError as err:
                out.append((position, RecordError(position, f"line {position + 1}: invalid JSON: {err}")))
        if good:
            return out
    raise InvalidInput(f"body is not {what}: invalid JSON: {exc}")


def _parses(line: bytes) -> bool:
    """Whether a line is one JSON text (its shape only: I-JSON is checked on reading)."""
    try:
        orjson.loads(line)
    except orjson.JSONDecodeError:
        return False
    return True


_WRAPPER_RE_CACHE: dict[str, re.Pattern[bytes]] = {}


def _array_start(text: bytes, wrapper_key: str | None) -> int | None:
    """Index just after the ``[`` that opens the record array, if the body has one."""
    if text.startswith(b"["):
        return 1
    if wrapper_key and text.startswith(b"{"):
        pattern = _WRAPPER_RE_CACHE.get(wrapper_key)
        if pattern is None:
            pattern = re.compile(rb'"' + re.escape(wrapper_key.encode()) + rb'"\s*:\s*\[')
            _WRAPPER_RE_CACHE[wrapper_key] = pattern
        match = pattern.search(text)
        if match:
            return match.end()
    return None


def _loads_tail(piece: bytes) -> Any:
    """Parse a resynchronised piece; the last one may carry the array's closing brackets."""
    try:
        return strict_json.loads(piece)
    except strict_json.NotIJSON:
        raise
    except orjson.JSONDecodeError:
        trimmed = piece
        for _ in range(2):
            trimmed = trimmed.rstrip()
            if not trimmed.endswith((b"]", b"}")):
                break
            trimmed = trimmed[:-1]
            try:
                return strict_json.loads(trimmed)
            except orjson.JSONDecodeError:
                continue
        raise


def _resync(text: bytes, offset: int, chunk: bytes) -> list[bytes]:
    """Split a broken chunk at lines that open an element at the array's indentation."""
    line_start = text.rfind(b"\n", 0, offset) + 1
    indent = text[line_start:offset]
    if indent.strip() or b"\n" not in chunk:
        return [chunk]
    pattern = re.compile(rb"\n" + re.escape(indent) + rb"(?=[\{\[])")
    pieces = [p.strip().rstrip(b",").strip() for p in pattern.split(chunk)]
    return [p for p in pieces if p] or [chunk]


def split_json_array(text: bytes, start: int) -> Iterator[tuple[int, bytes]]:
    """Yield ``(offset, raw bytes)`` of each element of the JSON array starting at ``start``.

    String-aware bracket counting: a syntax error inside one element stays inside it, so
    that its neighbours still parse. Stops at the array's closing bracket.
    """
    depth = 0
    in_string = False
    escaped_at = -2
    begin = start
    for match in _SPECIAL.finditer(text, start):
        i = match.start()
        c = text[i]
        if in_string:
            if c == 0x5C:  # backslash: skip the escaped character
                escaped_at = i if escaped_at != i - 1 else -2
            elif c == 0x22 and escaped_at != i - 1:
                in_string = False
            continue
        if c == 0x22:
            in_string = True
        elif c in (0x7B, 0x5B):  # { [
            depth += 1
        elif c in (0x7D, 0x5D):  # } ]
            if depth == 0 and c == 0x5D:
                yield from _piece(text, begin, i)
                return
            depth = max(depth - 1, 0)
        elif c == 0x2C and depth == 0:
            yield from _piece(text, begin, i)
            begin = i + 1
    yield from _piece(text, begin, len(text))


_SPECIAL = re.compile(rb'["\\{}\[\],]')


def _piece(text: bytes, begin: int, end: int) -> Iterator[tuple[int, bytes]]:
    chunk = text[begin:end]
    stripped = chunk.lstrip()
    if stripped.strip():
        yield begin + len(chunk) - len(stripped), stripped.rstrip()


# --- value helpers ------------------------------------------------------------------


def epoch_ms_to_rfc3339(value: int | float) -> str:
    return _from_epoch(value / 1000, value).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def epoch_ns_to_rfc3339(value: int) -> str:
    seconds, nanos = divmod(int(value), 1_000_000_000)
    return _from_epoch(seconds, value).strftime("%Y-%m-%dT%H:%M:%S.") + f"{nanos // 1000:06d}Z"


def _from_epoch(seconds: int | float, value: int | float) -> datetime:
    try:
        return datetime.fromtimestamp(seconds, tz=UTC)
    except (OverflowError, OSError, ValueError):  # beyond years 1-9999 (or the platform's time_t)
        raise RecordProblem(f"time {value!r} is out of range") from None


def time_value(value: Any) -> str | None:
    """Epoch milliseconds (number or digit string) or an RFC 3339 string -> RFC 3339."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return epoch_ms_to_rfc3339(value)
    if isinstance(value, str):
        stripped = value.strip()
        if stripped.isdigit():
            return epoch_ms_to_rfc3339(int(stripped))
        if stripped.endswith(("z", "Z")) or "+" in stripped[10:] or "-" in stripped[10:]:
            return stripped
        raise RecordProblem(f"time {value!r} has no UTC offset")
    raise RecordProblem(f"time must be a string or epoch milliseconds, got {type(value).__name__}")


_TRACEPARENT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")


def parse_traceparent(value: Any) -> dict[str, str] | None:
    """W3C Trace Context ``traceparent`` -> ``{"trace_id", "span_id"}`` (None if invalid)."""
    if not isinstance(value, str):
        return None
    match = _TRACEPARENT.match(value.strip().lower())
    if not match or match.group(1) == "ff":
        return None
    trace_id, span_id = match.group(2), match.group(3)
    if not trace_id.strip("0") or not span_id.strip("0"):
        return None
    return {"trace_id": trace_id, "span_id": span_id}


def text(value: Any) -> str | None:
    """A non-empty string, or None."""
    if isinstance(value, str):
        value = value.strip()
        return value or None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return None


def prune(obj: dict[str, Any]) -> dict[str, Any]:
    """Drop keys whose value is None or an empty dict/list/string (one level)."""
    return {k: v for k, v in obj.items() if v is not None and v != {} and v != [] and v != ""}


_ACTION_BAD = re.compile(r"[^A-Za-z0-9_.:/\-]+")


def action_part(value: str) -> str:
    """Make a free string usable inside a dotted action (DESIGN.md action grammar)."""
    return _ACTION_BAD.sub("_", value.strip()).strip("_") or "unknown"


def first(*values: Any) -> Any:
    for value in values:
        if value is not None and value != "":
            return value
    return None


def decode_objects(
    kind: str,
    records: Iterable[tuple[int, Any]],
    one: str,
    normalise: Callable[[Mapping[str, Any]], dict[str, Any] | None],
) -> Decoded:
    """Normalise records one by one (``one`` names a record, e.g. "a CloudTrail
    record"): a record that is not a JSON object, or that its normaliser refuses,
    becomes that record's error; the others are kept."""
    decoded = Decoded(kind)
    for position, record in records:
        if isinstance(record, RecordError):
            decoded.add(position, record)
        elif not isinstance(record, dict):
            decoded.error(position, f"{one} must be a JSON object")
        else:
            emit(decoded, position, lambda r=record: normalise(r))
    return decoded


def emit(
    decoded: Decoded,
    position: int,
    build: Callable[[], dict[str, Any] | None],
    *,
    validate: bool = True,
) -> None:
    """Run one record's normaliser; record its event or a clear per-record error.

    ``build`` returning ``None`` means "deliberately skipped".
    """
    from auditfed.errors import InvalidEvent
    from auditfed.event import validate_event

    try:
        event = build()
        if event is None:
            decoded.skipped += 1
            return
        if validate:
            event = validate_event(event)
    except RecordProblem as exc:
        decoded.error(position, str(exc))
    except InvalidEvent as exc:
        detail = "; ".join(f"{e['path']}: {e['reason']}" for e in exc.errors) or exc.detail
        decoded.error(position, f"does not map to a valid event: {detail}")
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        decoded.error(position, f"malformed record: {type(exc).__name__}: {exc}")
    else:
        decoded.add(position, event)
