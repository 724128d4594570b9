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

    The getter walks nested dicts key by key, which is what :func:`resolve` finds
    first. It falls back to :func:`resolve` only when that could find something
    else: a list on the way, or a literal dotted key (``"a.b"``) in a dict the walk
    passed. An absent field, the common case of optional fields, costs a walk and a
    few set-membership tests.
    """
    parts = tuple(path.split(".")) if isinstance(path, str) else tuple(path)
    if len(parts) == 1:
        key = parts[0]

        def get1(obj: Any) -> Any:
            return obj.get(key, MISSING)

        return get1
    if len(parts) == 2:
        k1, k2 = parts
        dotted = ".".join(parts)

        def get2(obj: Any) -> Any:
            inner = obj.get(k1, MISSING)
            if type(inner) is dict:
                value = inner.get(k2, MISSING)
                if value is not MISSING:
                    return value
            elif type(inner) is list:
                return resolve(obj, parts)
            return obj.get(dotted, MISSING)

        return get2
    dotted_keys = _dotted_keys(parts)

    def getn(obj: Any) -> Any:
        current = obj
        for part in parts:
            if type(current) is not dict:
                break
            current = current.get(part, MISSING)
        else:
            if current is not MISSING:
                return current
        return MISSING if _absent(obj, parts, dotted_keys) else resolve(obj, parts)

    return getn


def _dotted_keys(parts: tuple[str, ...]) -> tuple[tuple[str, ...], ...]:
    """Per depth, the literal dotted keys :func:`resolve` would also try there."""
    return tuple(
        tuple(".".join(parts[depth:end]) for end in range(depth + 2, len(parts) + 1)) for depth in range(len(parts))
    )


def _absent(obj: Any, parts: tuple[str, ...], dotted_keys: tuple[tuple[str, ...], ...]) -> bool:
    """Whether :func:`resolve` surely finds nothing: no list and no dotted key on the walk."""
    current = obj
    for part, keys in zip(parts, dotted_keys, strict=True):
        for key in keys:
            if key in current:
                return False
        current = current.get(part, MISSING)
        if type(current) is list:
            return False
        if type(current) is not dict:
            return True
    return True


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
