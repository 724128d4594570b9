"""JSON texts from outside, read exactly or refused: RFC 8259 syntax under I-JSON (RFC 7493).

Every JSON text a participant sends (``/v1/events`` bodies and NDJSON lines, source
records, OTLP/JSON, federation batches, the JSON bodies of the admin routes) is read
with :func:`loads`, so that what is stored is exactly what was sent or the text is
refused. On top of RFC 8259 syntax (UTF-8, no ``NaN``/``Infinity``, no lone
surrogates; orjson checks these) a text must meet:

* **unique member names** (RFC 7493 §2.3): ``{"a": 1, "a": 2}`` is refused rather
  than silently keeping the last value;
* **integers within ±(2**53 - 1)** (RFC 7493 §2.2): a number written without fraction
  or exponent beyond that range would not survive as an exact value (``2**64``
  became ``1.8446744073709552e+19``); send it as a string. A number with a fraction or
  exponent is an IEEE 754 double: it must be finite, and is kept as the nearest
  double (which is how RFC 8785 serialises it in the log);
* **at most** :data:`MAX_JSON_DEPTH` **nested arrays/objects**: checked once here so
  that nothing later (validation, redaction, canonical JSON, detection, OCSF) can
  recurse out of stack on a hostile text. Stored events nest at most 32 levels
  (:data:`auditfed.event.canonical.MAX_DEPTH`), so this never refuses what the log
  would take.

A violation raises :class:`NotIJSON`, a subclass of ``orjson.JSONDecodeError``: every
caller treats it exactly like a syntax error (a 400 for a whole body, a rejected line
or record where a format judges records one by one).

Cost: orjson parses; then one orjson serialisation of the value and three byte scans
(C speed, about 3 % of preparing an event) prove that no member was dropped, no long
digit run and no deep nesting exist. Only a text those scans cannot clear is walked
exactly, with the standard library's scanner (its hooks see every member name and
integer literal) to name the problem and the item.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

__all__ = ["MAX_JSON_DEPTH", "MAX_SAFE_INTEGER", "NotIJSON", "loads", "loads_lines"]

#: Deepest nesting of arrays and objects in one JSON text.
MAX_JSON_DEPTH = 64
#: RFC 7493 §2.2: integers beyond this magnitude are not exact in IEEE 754 doubles.
MAX_SAFE_INTEGER = 2**53 - 1

#: An integer literal beyond MAX_SAFE_INTEGER is a run of 16 or more digits after a
#: ``:``, ``,`` or ``[`` and optional whitespace and minus sign. The scan maps those
#: three and whitespace to ``:``, digits and ``-`` to ``0``, and looks for the run:
#: digit runs inside strings (hex ids) rarely follow one of them.
_LONG_NUMBER = b":" + b"0" * len(str(MAX_SAFE_INTEGER))
_NUMBER_SCAN = bytes.maketrans(b"-0123456789,[ \t\r\n", b"0" * 11 + b":" * 6)
#: With OPT_INDENT_2 an element inside k containers is on a line indented 2k spaces.
_INDENT = orjson.OPT_INDENT_2
#: A quote after k or more backslashes, for k = 1, 2, ...: escaped quotes are counted
#: by inclusion-exclusion (a literal search is the fastest scan ``re`` has); quotes
#: after longer runs send the text to the exact check.
_QUOTE_AFTER = tuple(re.compile(re.escape(b"\\" * k + b'"')) for k in range(1, 9))


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
    if clean and _plainly_exact(b"\n".join(lines), out, 1):
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
    """True when byte scans prove ``value`` is all of ``data`` and within the limits.

    ``False`` means "not proven", not "refused".
    """
    if type(value) is not dict and type(value) is not list:
        return type(value) is not int and type(value) is not float
    if _LONG_NUMBER in data.translate(_NUMBER_SCAN):
        return False  # maybe an integer literal beyond ±(2**53 - 1)
    try:
        text = orjson.dumps(value, option=_INDENT)
    except orjson.JSONEncodeError:
        return False  # nested past orjson's own limit (255)
    if b"\n" + b" " * (2 * (MAX_JSON_DEPTH + extra_depth)) in text:
        return False  # maybe nested too deep
    # Every string (member names included) is two unescaped quotes in both texts;
    # a member dropped for a duplicate name takes at least its name with it.
    sent = _unescaped_quotes(data)
    return sent is not None and sent == _unescaped_quotes(text)


def _unescaped_quotes(text: bytes) -> int | None:
    """Quote characters not escaped by a backslash (``None``: too costly to tell)."""
    quotes = text.count(b'"')
    if b"\\" not in text:
        return quotes
    # A quote is escaped when an odd run of backslashes precedes it. With c(k) the
    # quotes preceded by at least k backslashes, those are c(1) - c(2) + c(3) - ...
    escaped, sign = 0, 1
    for pattern in _QUOTE_AFTER:
        if pattern.search(text) is None:
            return quotes - escaped
        escaped += sign * text.count(pattern.pattern)
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


def _safe_integer(literal: str) -> None:
    digits = len(literal) - literal.startswith("-")  # JSON has no leading zeros
    if digits > 16 or (digits == 16 and abs(int(literal)) > MAX_SAFE_INTEGER):
        shown = literal if len(literal) <= 40 else literal[:20] + "..." + literal[-8:]
        raise _Problem(
            f"integer {shown} is outside ±(2**53 - 1), the exact range of I-JSON (RFC 7493); "
            "send it as a string"
        )


def _ignore(_: str) -> None:
    return None


# The hooks return None: only their checks matter (orjson's value is the one kept).
_DECODER = json.JSONDecoder(object_pairs_hook=_unique_members, parse_int=_safe_integer,  # type: ignore[arg-type]
                            parse_float=_ignore, parse_constant=_ignore)
