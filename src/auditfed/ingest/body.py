"""Request bodies: size limits, gzip, JSON / JSON array / NDJSON.

A gzip body is inflated in steps so that a small compressed body cannot expand past
the configured limit (a "zip bomb"): the limit applies to the inflated size.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any

import orjson

from auditfed.errors import InvalidInput, PayloadTooLarge

NDJSON_TYPES = ("application/x-ndjson", "application/ndjson", "application/jsonl")


@dataclass(frozen=True, slots=True)
class BadItem:
    """An item of a batch that could not even be parsed (one NDJSON line)."""

    position: int
    reason: str


def inflate(body: bytes, encoding: str | None, limit: int) -> bytes:
    """The body with its Content-Encoding undone, at most ``limit`` bytes."""
    encoding = (encoding or "identity").strip().lower()
    if encoding in ("identity", ""):
        return body
    if encoding not in ("gzip", "x-gzip"):
        raise InvalidInput(f"unsupported Content-Encoding {encoding!r}: use gzip or none")
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        data = inflater.decompress(body, limit + 1)
        if len(data) > limit or inflater.unconsumed_tail:
            raise PayloadTooLarge(f"the inflated body is larger than {limit} bytes")
        data += inflater.flush()
    except zlib.error as exc:
        raise InvalidInput(f"the gzip body is corrupt: {exc}") from None
    if not inflater.eof:
        raise InvalidInput("the gzip body is truncated")
    if len(data) > limit:
        raise PayloadTooLarge(f"the inflated body is larger than {limit} bytes")
    return data


def parse_json_items(body: bytes, content_type: str | None) -> list[Any | BadItem]:
    """Items of a JSON object, JSON array or NDJSON body, in order.

    A body that is not JSON at all is an :class:`InvalidInput`; in NDJSON a line that
    does not parse becomes a :class:`BadItem` so that the other lines still count.
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
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"the body is not valid JSON: {exc}") from None
    if isinstance(value, list):
        return value
    if isinstance(value, dict):
        return [value]
    raise InvalidInput("the body must be a JSON object, an array of objects, or NDJSON")


def _parse_ndjson(body: bytes) -> list[Any | BadItem]:
    items: list[Any | BadItem] = []
    for line in body.split(b"\n"):
        if not line.strip():
            continue
        try:
            items.append(orjson.loads(line))
        except orjson.JSONDecodeError as exc:
            items.append(BadItem(len(items), f"line is not valid JSON: {exc}"))
    return items
