"""Request bodies: size limits, gzip, JSON / JSON array / NDJSON.

Every byte of a body is either decoded or the body is refused. A gzip body is
inflated in steps so that a small compressed body cannot expand past the configured
limit (a "zip bomb"): the limit applies to the inflated size. A gzip body may be
several members one after the other (RFC 1952 §2.2; what ``cat a.gz b.gz`` and
several log shippers produce): every member is inflated and the limit applies to
their total. Anything after the last member that is not a member is refused, as is a
truncated or corrupt member. JSON is read by :func:`auditfed.event.strict_json.loads`
(RFC 8259 under I-JSON, RFC 7493): duplicate member names, integers beyond
±(2**53 - 1) and nesting deeper than 64 levels are refused like bad syntax.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any

import orjson

from auditfed.errors import InvalidInput, PayloadTooLarge
from auditfed.event import strict_json

NDJSON_TYPES = ("application/x-ndjson", "application/ndjson", "application/jsonl")
GZIP_MAGIC = b"\x1f\x8b"


@dataclass(frozen=True, slots=True)
class BadItem:
    """An item of a batch that could not even be parsed (one NDJSON line)."""

    position: int
    reason: str


def inflate(body: bytes, encoding: str | None, limit: int, max_members: int = 10_000) -> bytes:
    """The body with its Content-Encoding undone, at most ``limit`` bytes.

    Every gzip member is inflated (at most ``max_members``: each carries at least
    one event, so more than a request may hold is abuse, not data).
    """
    encoding = (encoding or "identity").strip().lower()
    if encoding in ("identity", ""):
        return body
    if encoding not in ("gzip", "x-gzip"):
        raise InvalidInput(f"unsupported Content-Encoding {encoding!r}: use gzip or none")
    out: list[bytes] = []
    size, rest = 0, body
    while True:
        member, rest = _inflate_member(rest, limit - size, limit)
        out.append(member)
        size += len(member)
        if not rest:
            return b"".join(out)
        if rest[:2] != GZIP_MAGIC:
            raise InvalidInput(
                f"{len(rest)} bytes after gzip member {len(out)} are not a gzip member: "
                "send the gzip data only"
            )
        if len(out) >= max_members:
            raise InvalidInput(f"more than {max_members} gzip members in one body: compress it as one")


def _inflate_member(data: bytes, room: int, limit: int) -> tuple[bytes, bytes]:
    """One gzip member of at most ``room`` inflated bytes, and the bytes after it."""
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        member = inflater.decompress(data, room + 1)
        if len(member) > room or inflater.unconsumed_tail:
            raise PayloadTooLarge(f"the inflated body is larger than {limit} bytes")
        member += inflater.flush()
    except zlib.error as exc:
        raise InvalidInput(f"the gzip body is corrupt: {exc}") from None
    if not inflater.eof:
        raise InvalidInput("the gzip body is truncated")
    if len(member) > room:
        raise PayloadTooLarge(f"the inflated body is larger than {limit} bytes")
    return member, inflater.unused_data


def parse_json_items(body: bytes, content_type: str | None) -> list[Any | BadItem]:
    """Items of a JSON object, JSON array or NDJSON body, in order.

    A body that is not JSON at all (or breaks an I-JSON rule) is an
    :class:`InvalidInput` naming the item; in NDJSON a line that does not parse
    becomes a :class:`BadItem` so that the other lines still count.
    """
    media_type = (content_type or "application/json").split(";")[0].strip().lower()
    if media_type in NDJSON_TYPES:
        return _parse_ndjson(body)
    if media_type not in ("application/json", "text/json") and not media_type.endswith("+json"):
        raise InvalidInput(
            f"unsupported Content-Type {media_type!r}: use application/json or "
            "application/x-ndjson"
        )
    try:
        value = strict_json.loads(body)
    except strict_json.NotIJSON as exc:
        raise InvalidInput(f"the body is not I-JSON: {exc}", item=exc.item or 0) from None
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"the body is not valid JSON: {exc}") from None
    if isinstance(value, list):
        return value
    if isinstance(value, dict):
        return [value]
    raise InvalidInput("the body must be a JSON object, an array of objects, or NDJSON")


def _parse_ndjson(body: bytes) -> list[Any | BadItem]:
    lines = [line for line in body.split(b"\n") if line.strip()]
    items: list[Any | BadItem] = []
    for position, value in enumerate(strict_json.loads_lines(lines)):
        if isinstance(value, strict_json.NotIJSON):
            items.append(BadItem(position, f"line is not I-JSON: {value}"))
        elif isinstance(value, orjson.JSONDecodeError):
            items.append(BadItem(position, f"line is not valid JSON: {value}"))
        else:
            items.append(value)
    return items
