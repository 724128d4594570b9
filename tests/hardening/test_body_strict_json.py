"""The I-JSON reader's cheap checks never let a duplicate name or deep nesting through.

:func:`auditfed.event.strict_json.loads` clears most texts with byte scans and checks
the rest exactly; this compares it, on generated texts full of the shapes that could
fool the scans (escaped quotes and backslashes, ``\\u`` escapes of names, whitespace,
non-ASCII, nesting around the limit), with a plain reference reader.
"""

from __future__ import annotations

import json

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from auditfed.event.strict_json import MAX_JSON_DEPTH, NotIJSON, loads, loads_lines

NAMES = st.sampled_from(["a", "b", 'q"', "\\", "\\\"", "é", "a\\", "\n", "{", ":"])
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-(2**60), 2**60), st.floats(allow_nan=False,
                    allow_infinity=False), st.text(alphabet='ab"\\é\n{}[],:', max_size=5))


def _dump_string(text: str, draw) -> str:
    encoded = json.dumps(text, ensure_ascii=draw(st.booleans()))
    if draw(st.booleans()) and text == "a":
        return '"\\u0061"'  # the same name, written another way
    return encoded


@st.composite
def json_texts(draw, depth: int = 0) -> str:
    """A JSON text whose objects may repeat a member name, in varied spellings."""
    space = draw(st.sampled_from(["", " ", "\n  "]))
    kind = draw(st.sampled_from(["scalar", "list", "object"] if depth < 5 else ["scalar"]))
    if kind == "scalar":
        value = draw(SCALARS)
        return _dump_string(value, draw) if isinstance(value, str) else json.dumps(value)
    children = draw(st.lists(st.deferred(lambda: json_texts(depth + 1)), max_size=3))
    if kind == "list":
        return "[" + ("," + space).join(children) + "]"
    names = [_dump_string(draw(NAMES), draw) for _ in children]
    return "{" + ("," + space).join(f"{n}:{space}{c}" for n, c in zip(names, children, strict=True)) + "}"


def _reference(text: str) -> bool:
    """Whether ``text`` has unique names and nests within the limit (plain Python)."""
    def unique(pairs: list) -> dict:
        if len({k for k, _ in pairs}) != len(pairs):
            raise ValueError("duplicate")
        return dict(pairs)

    try:
        value = json.loads(text, object_pairs_hook=unique)
    except ValueError:
        return False
    return _depth(value) <= MAX_JSON_DEPTH


def _depth(value: object) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


def _accepted(data: bytes) -> bool:
    try:
        loads(data)
    except NotIJSON:
        return False
    return True


@settings(max_examples=400, deadline=None)
@given(json_texts())
def test_loads_agrees_with_the_reference(text: str) -> None:
    data = text.encode()
    assert _accepted(data) == _reference(text), text
    if _accepted(data):
        assert loads(data) == orjson.loads(data)


@settings(max_examples=200, deadline=None)
@given(st.lists(json_texts(), min_size=1, max_size=4))
def test_ndjson_lines_are_judged_one_by_one(lines: list[str]) -> None:
    got = loads_lines([line.encode() for line in lines])
    assert [not isinstance(v, NotIJSON) for v in got] == [_reference(line) for line in lines]


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH - 1, MAX_JSON_DEPTH, MAX_JSON_DEPTH + 1, 1000])
@pytest.mark.parametrize("inner", ["1", "[]", "{}"])
def test_the_depth_limit_is_exact(depth: int, inner: str) -> None:
    # inner counts as a level when it is a container
    levels = depth - 1 if inner != "1" else depth
    text = '{"a":' * levels + inner + "}" * levels
    assert _accepted(text.encode()) == (depth <= MAX_JSON_DEPTH)
    assert _accepted(("[" + text + "]").encode()) == (depth + 1 <= MAX_JSON_DEPTH)


@pytest.mark.parametrize("text", [
    r'{"a\\": "\\", "a\\": 1}',           # every string ends in an escaped backslash
    r'{"a\"": "x\\\"", "a\"": 1}',          # escaped quotes after odd and even runs
    r'{"a": "\\\\\\\\\"", "a": 1}',     # a quote after nine backslashes
    '{"a": ' + json.dumps("\\" * 40 + '"') + ', "a": 1}',  # a run longer than the scans follow
])
def test_escaped_backslashes_do_not_hide_duplicates(text: str) -> None:
    assert not _reference(text)
    assert not _accepted(text.encode())
    assert _accepted(text.replace('"a', '"b', 1).encode())
