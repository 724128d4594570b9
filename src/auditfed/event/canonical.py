"""Canonical event bytes: RFC 8785, the JSON Canonicalization Scheme (JCS).

The leaf data of the Merkle log is the JCS encoding of the stored event, so anyone can
re-derive it. JCS is the reference; the ``rfc8785`` package implements it. It is pure
Python (about 30 µs for an ordinary event), so on the ingest path we take a fast route
where it provably yields the same bytes: orjson with sorted keys is byte-identical to
JCS for JSON whose numbers are all integers within ±(2**53 - 1) and whose object keys
have no code point at or above U+E000 (the only place where JCS's UTF-16 key order can
differ from code point order). String escaping is the same in both (checked by tests).
Anything else (floats, exotic keys) goes through ``rfc8785``. A property test holds
the two routes equal.

The same walk enforces the I-JSON limits every stored event must meet: nesting depth
and number range (±(2**53 - 1), for integers and doubles alike).
"""

from __future__ import annotations

from typing import Any

import orjson
import rfc8785

from auditfed.errors import InvalidEvent

MAX_SAFE_INTEGER = 2**53 - 1
MAX_DEPTH = 32
_SORTED = orjson.OPT_SORT_KEYS


#: Members whose values producers choose freely; everything else is validated
#: by the event model as strings, booleans and lists of such.
FREE_FORM = ("attributes", "original")


def canonical_bytes(value: Any) -> bytes:
    """The RFC 8785 canonical JSON bytes of ``value``."""
    if _plain(value, 0):
        return orjson.dumps(value, option=_SORTED)
    return _slow(value)


def canonical_event_bytes(event: dict[str, Any]) -> bytes:
    """:func:`canonical_bytes` of a *validated* event: only free-form members are walked."""
    plain = True
    for key in FREE_FORM:
        member = event.get(key)
        if member is None:
            continue
        try:
            plain = _plain(member, 1) and plain  # every member is checked for the limits
        except InvalidEvent as exc:
            raise InvalidEvent(f"{key}: {exc.detail}") from None
    return orjson.dumps(event, option=_SORTED) if plain else _slow(event)


def _slow(value: Any) -> bytes:
    try:
        return rfc8785.dumps(value)
    except rfc8785.CanonicalizationError as exc:
        raise InvalidEvent(f"not canonicalisable as I-JSON: {exc}") from None


def _plain(value: Any, depth: int) -> bool:
    """True when orjson's sorted output is exactly JCS for ``value``.

    Raises :class:`InvalidEvent` for nesting deeper than ``MAX_DEPTH`` or a number
    outside the I-JSON range (RFC 7493 §2.2): an integer, or a double (which is what
    a parser makes of ``18446744073709551616``, and of ``1e20``), beyond
    ±(2**53 - 1). The whole value is checked even once it is known not to be plain.
    """
    kind = type(value)
    if kind is str or kind is bool or value is None:
        return True
    if kind is int or kind is float:
        if -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
            return kind is int  # floats take the rfc8785 route
        raise InvalidEvent(f"number {value!r} is outside the I-JSON range ±(2**53 - 1): send it as a string")
    if kind is dict:
        if depth >= MAX_DEPTH:
            raise InvalidEvent(f"nesting deeper than {MAX_DEPTH} levels")
        plain = True
        for key, item in value.items():
            # isascii() is O(1); only non-ASCII keys need the code point check.
            if not key.isascii() and max(key) >= "\ue000":
                plain = False
            if type(item) is not str and not _plain(item, depth + 1):
                plain = False
        return plain
    if kind is list:
        if depth >= MAX_DEPTH:
            raise InvalidEvent(f"nesting deeper than {MAX_DEPTH} levels")
        plain = True
        for item in value:
            if type(item) is not str and not _plain(item, depth + 1):
                plain = False
        return plain
    return False
