"""JSON texts from outside, read exactly or refused: RFC 8259 syntax under I-JSON (RFC 7493).

Every JSON text a participant sends (``/v1/events`` bodies and NDJSON lines, source
records, OTLP/JSON, federation batches and the leaves in them, the JSON bodies of the
admin routes) is read with :func:`loads`, so that what is stored is exactly what was
sent or the text is refused. On top of RFC 8259 syntax (UTF-8, no ``NaN``/``Infinity``,
no lone surrogates, no number that overflows a double; orjson checks these) a text
must have:

* **unique member names** (RFC 7493 §2.3): ``{"a": 1, "a": 2}`` is refused rather
  than silently keeping the last value;
* **at most** :data:`MAX_JSON_DEPTH` **nested arrays/objects**: checked once here so
  that nothing later (validation, redaction, canonical JSON, detection, OCSF) can
  recurse out of stack on a hostile text. Stored events nest at most 32 levels
  (:data:`auditfed.event.canonical.MAX_DEPTH`), so this never refuses what the log
  would take.

The third I-JSON rule, numbers within ±(2**53 - 1) (RFC 7493 §2.2), is a rule on
values: :func:`auditfed.event.canonical.canonical_event_bytes` refuses any number of
larger magnitude in an event, however it was written (``18446744073709551616``, which
a JSON parser turns into ``1.8446744073709552e+19``, as well as ``1e20``).

A violation raises :class:`NotIJSON`, a subclass of ``orjson.JSONDecodeError``: every
caller treats it exactly like a syntax error (a 400 for a whole body, a rejected line
or record where a format judges records one by one).

Cost: orjson parses; then orjson serialises the value back once, inside wrapper
lists that make its own nesting limit fail exactly past :data:`MAX_JSON_DEPTH`. The
result equals the text for most producers (then nothing was dropped); when it
differs, both have their unescaped quotes counted: a member dropped for a duplicate
name takes at least its name's two quotes with it. C-speed passes over the text,
about 2 % of preparing an event.
Only a text these cannot clear is scanned exactly, with the standard library's scanner
(its hook sees every object's member names), to name the problem and the item.
"""

from __future__ import annotations

import json
import re
import threading
from typing import Any

import orjson

__all__ = ["MAX_JSON_DEPTH", "NotIJSON", "loads", "loads_lines"]

#: Deepest nesting of arrays and objects in one JSON text.
MAX_JSON_DEPTH = 64

#: A quote after k or more backslashes, for k = 1, 2, ...: escaped quotes are counted
#: by inclusion-exclusion (a literal search is the fastest scan ``re`` has); quotes
#: after longer runs send the text to the exact check.
_QUOTE_AFTER = tuple((b"\\" * k + b'"', re.compile(re.escape(b"\\" * k + b'"'))) for k in range(1, 9))


class NotIJSON(orjson.JSONDecodeError):
    """Valid JSON syntax that I-JSON refuses; ``item`` is the element of a top-level
    array it is in (``None`` when the text is not an array)."""

    def __init__(self, reason: str, item: int | None = None) -> None:
        where = "" if item is None else f"item {item}: "
        ValueError.__init__(self, where + reason)
        self.msg, self.doc, self.pos, self.lineno, self.colno = reason, "", 0, 1, 1
        self.reason = reason
        self.item = item

    def __reduce__(self) -> tuple[Any, ...]:
        return NotIJSON, (self.reason, self.item)


def loads(data: bytes | bytearray | memoryview | str) -> Any:
    """The value of one JSON text; :class:`NotIJSON` (or ``orjson.JSONDecodeError``
    for bad syntax) when it is not exactly representable."""
    if isinstance(data, str):
        data = data.encode()
    elif not isinstance(data, bytes):
        data = bytes(data)
    value = orjson.loads(data)
    if not _plainly_exact(data, value, 0):
        _check_exactly(data, value)
    return value


def loads_lines(lines: list[bytes]) -> list[Any]:
    """:func:`loads` of each line of an NDJSON body: per line its value, or the
    ``orjson.JSONDecodeError`` (:class:`NotIJSON` included) that refuses it.

    The cheap checks run once over all lines; lines are checked one by one only when
    those cannot clear them all.
    """
    out: list[Any] = []
    for line in lines:
        try:
            out.append(orjson.loads(line))
        except orjson.JSONDecodeError as exc:
            out.append(exc)
    # All lines at once, as one array (which adds one level of indentation).
    clean = not any(isinstance(v, orjson.JSONDecodeError) for v in out)
    if clean and _plainly_exact(b"[" + b",".join(lines) + b"]", out, 1):
        return out
    for i, (line, value) in enumerate(zip(lines, out, strict=True)):
        if isinstance(value, orjson.JSONDecodeError):
            continue
        try:
            if not _plainly_exact(line, value, 0):
                _check_exactly(line, value)
        except NotIJSON as exc:
            out[i] = exc
    return out


# --- the cheap checks ------------------------------------------------------------------


def _plainly_exact(data: bytes, value: Any, extra_depth: int) -> bool:
    """True when byte scans prove ``value`` holds every member of ``data`` and nests
    within the limit (``extra_depth`` levels of ``value`` are not in ``data``).

    ``False`` means "not proven", not "refused".
    """
    if type(value) is not dict and type(value) is not list:
        return True
    wrapped = _serialised_in_depth_probe(value, extra_depth)
    if wrapped is None:
        return False  # maybe nested too deep
    # (a bytes slice: comparing a memoryview goes item by item, ten times slower)
    if wrapped[_PROBE_LEVELS - extra_depth:extra_depth - _PROBE_LEVELS] == data:
        return True  # serialises back to exactly the text: nothing was dropped
    sent = _unescaped_quotes(data)
    return sent is not None and sent == _unescaped_quotes(wrapped)


def _orjson_max_depth() -> int:
    """The deepest nesting orjson serialises (254 in orjson 3.x)."""
    value: list[Any] = []
    for depth in range(1, 4097):
        try:
            orjson.dumps(value)
        except orjson.JSONEncodeError:
            return depth - 1
        value = [value]
    raise RuntimeError("orjson no longer limits nesting: auditfed.event.strict_json needs another depth check")


#: orjson refuses to serialise nesting deeper than its limit; a value wrapped in this
#: many one-element lists fails there exactly when it nests deeper than MAX_JSON_DEPTH.
#: So one serialisation gives both the value's JSON (between the wrappers) and its depth.
_PROBE_LEVELS = _orjson_max_depth() - MAX_JSON_DEPTH


class _DepthProbe(threading.local):
    """Per thread, the wrapper lists (built once) with a slot for the value."""

    def __init__(self) -> None:
        self.slot: list[Any] = [None]
        self.outer: list[Any] = self.slot
        for _ in range(_PROBE_LEVELS - 1):
            self.outer = [self.outer]


_PROBE = _DepthProbe()


def _serialised_in_depth_probe(value: Any, extra_depth: int) -> bytes | None:
    """``value`` serialised inside ``_PROBE_LEVELS - extra_depth`` wrapper lists, or
    ``None`` when it nests deeper than ``MAX_JSON_DEPTH + extra_depth``."""
    probe = _PROBE
    wrapper = probe.outer
    for _ in range(extra_depth):
        wrapper = wrapper[0]
    probe.slot[0] = value
    try:
        return orjson.dumps(wrapper)
    except orjson.JSONEncodeError:
        return None
    finally:
        probe.slot[0] = None


def _unescaped_quotes(text: bytes) -> int | None:
    """Quote characters not escaped by a backslash (``None``: too costly to tell)."""
    quotes = text.count(b'"')
    if b"\\" not in text:
        return quotes
    # A quote is escaped when an odd run of backslashes precedes it. With c(k) the
    # quotes preceded by at least k backslashes, those are c(1) - c(2) + c(3) - ...
    escaped, sign = 0, 1
    for needle, pattern in _QUOTE_AFTER:
        if pattern.search(text) is None:
            return quotes - escaped
        escaped += sign * text.count(needle)
        sign = -sign
    return None


# --- the exact check -------------------------------------------------------------------


def _check_exactly(data: bytes, value: Any) -> None:
    """Raise :class:`NotIJSON` naming the first problem of a text orjson parsed."""
    if type(value) is list:
        for item, element in enumerate(value):
            if _too_deep(element, 2):
                raise NotIJSON(f"nested deeper than {MAX_JSON_DEPTH} levels of arrays and objects", item)
    elif _too_deep(value, 1):
        raise NotIJSON(f"nested deeper than {MAX_JSON_DEPTH} levels of arrays and objects")
    text = data.decode()
    if type(value) is not list:
        _scan(text, 0, None)
        return
    # Element by element, to name the item (the text is valid JSON: orjson read it).
    position = text.index("[") + 1
    for item in range(len(value)):
        position = _skip_space(text, position)
        position = _scan(text, position, item)
        position = _skip_space(text, position) + 1  # the , or ]


def _too_deep(value: Any, depth: int) -> bool:
    """Whether ``value``, itself at nesting ``depth``, holds containers deeper than the limit."""
    stack = [(value, depth)]
    while stack:
        current, level = stack.pop()
        kind = type(current)
        if kind is not dict and kind is not list:
            continue
        if level > MAX_JSON_DEPTH:
            return True
        children = current.values() if kind is dict else current
        stack.extend((child, level + 1) for child in children)
    return False


def _skip_space(text: str, position: int) -> int:
    while text[position] in " \t\r\n":
        position += 1
    return position


def _scan(text: str, position: int, item: int | None) -> int:
    """Run the standard scanner over the value at ``position``; where it ends."""
    try:
        return _DECODER.raw_decode(text, position)[1]
    except _Problem as problem:
        raise NotIJSON(str(problem), item) from None


class _Problem(ValueError):
    pass


def _unique_members(pairs: list[tuple[str, Any]]) -> None:
    if len({name for name, _ in pairs}) != len(pairs):
        seen: set[str] = set()
        for name, _ in pairs:
            if name in seen:
                raise _Problem(f"duplicate member name {name!r} in an object (RFC 7493: names must be unique)")
            seen.add(name)


def _ignore(_: str) -> None:
    return None


# The hooks return None: only the member names matter (orjson's value is the one kept).
_DECODER = json.JSONDecoder(object_pairs_hook=_unique_members, parse_int=_ignore,  # type: ignore[arg-type]
                            parse_float=_ignore, parse_constant=_ignore)
