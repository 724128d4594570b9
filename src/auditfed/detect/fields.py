"""Field access for Sigma rules: dotted Sigma field names resolved in event dicts.

Sigma (SigmaHQ specification, "Fields") names a field by a string; for JSON logs
such as AWS CloudTrail or Kubernetes audit records the SigmaHQ convention is a
dotted path into the nested object (``userIdentity.type``,
``objectRef.subresource``). A path is resolved key by key; a key that itself
contains dots (``data.protoPayload.methodName`` stored flat) is found by the slow
path, which tries every split of the remaining parts. Lists met along the way are
traversed: the result is then the list of every value found (Sigma backends for
JSON stores match a value list if any element matches).

:data:`MISSING` stands for an absent field; JSON ``null`` stays ``None``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["MISSING", "Getter", "compile_path", "resolve", "string_leaves", "text_of"]


class _Missing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False


#: Sentinel for a field that is not present in the event.
MISSING: Any = _Missing()

Getter = Callable[[Any], Any]


def resolve(obj: Any, parts: tuple[str, ...]) -> Any:
    """Resolve ``parts`` in ``obj`` trying literal dotted keys and traversing lists."""
    if not parts:
        return obj
    if isinstance(obj, dict):
        for cut in range(1, len(parts) + 1):
            key = parts[0] if cut == 1 else ".".join(parts[:cut])
            if key in obj:
                found = resolve(obj[key], parts[cut:])
                if found is not MISSING:
                    return found
        return MISSING
    if isinstance(obj, list):
        found_all: list[Any] = []
        for element in obj:
            found = resolve(element, parts)
            if found is MISSING:
                continue
            if isinstance(found, list):
                found_all.extend(found)
            else:
                found_all.append(found)
        return found_all if found_all else MISSING
    return MISSING


def compile_path(path: str | tuple[str, ...]) -> Getter:
    """Return a fast getter ``get(event) -> value | MISSING`` for a dotted path.

    The fast path walks nested dicts; anything else (a list on the way, a literal
    dotted key, an absent key) falls back to :func:`resolve`.
    """
    parts = tuple(path.split(".")) if isinstance(path, str) else tuple(path)
    if len(parts) == 1:
        key = parts[0]

        def get1(obj: Any) -> Any:
            value = obj.get(key, MISSING)
            if value is MISSING or type(value) is list:
                return resolve(obj, parts)
            return value

        return get1
    if len(parts) == 2:
        k1, k2 = parts

        def get2(obj: Any) -> Any:
            inner = obj.get(k1)
            if type(inner) is dict:
                value = inner.get(k2, MISSING)
                if value is not MISSING and type(value) is not list:
                    return value
            return resolve(obj, parts)

        return get2

    def getn(obj: Any) -> Any:
        current = obj
        for part in parts:
            if type(current) is not dict:
                return resolve(obj, parts)
            current = current.get(part, MISSING)
            if current is MISSING:
                return resolve(obj, parts)
        if type(current) is list:
            return resolve(obj, parts)
        return current

    return getn


def text_of(value: Any) -> str | None:
    """The string a scalar JSON value is compared as (``None`` for null/objects)."""
    kind = type(value)
    if kind is str:
        return value
    if kind is bool:
        return "true" if value else "false"
    if kind is int or kind is float:
        return str(value)
    return None


def string_leaves(obj: Any, out: list[str] | None = None) -> list[str]:
    """Every scalar value in a JSON tree, as text (keyword search looks at these)."""
    if out is None:
        out = []
    if isinstance(obj, dict):
        for value in obj.values():
            string_leaves(value, out)
    elif isinstance(obj, list):
        for value in obj:
            string_leaves(value, out)
    else:
        text = text_of(obj)
        if text is not None:
            out.append(text)
    return out
