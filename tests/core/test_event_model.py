"""The event model: strict validation with precise errors, and canonical bytes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from auditfed.errors import InvalidEvent
from auditfed.event import canonical_bytes, event_json_schema, validate_event, validate_events
from auditfed.identity.tokens import Caller
from auditfed.ingest.prepare import prepare_items

MINIMAL = {"action": "db.query", "actor": {"id": "alice"}}


def errors_of(obj: object) -> list[dict[str, str]]:
    with pytest.raises(InvalidEvent) as caught:
        validate_event(obj, position=4)
    return caught.value.errors


def test_minimal_event_gets_defaults() -> None:
    event = validate_event(MINIMAL)
    assert event == {"action": "db.query", "actor": {"id": "alice"}, "outcome": "unknown"}


def test_time_is_normalised_to_utc_microseconds() -> None:
    event = validate_event({**MINIMAL, "time": "2026-11-27T18:00:00.5+01:00"})
    assert event["time"] == "2026-11-27T17:00:00.500000Z"


@pytest.mark.parametrize(
    ("event", "path", "reason"),
    [
        ({"actor": {"id": "a"}}, "action", "Field required"),
        ({"action": "x"}, "actor", "Field required"),
        ({"action": "x", "actor": {}}, "actor.id", "Field required"),
        ({"action": 5, "actor": {"id": "a"}}, "action", "Input should be a valid string"),
        ({**MINIMAL, "actor": {"id": 7}}, "actor.id", "Input should be a valid string"),
        ({**MINIMAL, "colour": "red"}, "colour", "Extra inputs are not permitted"),
        ({**MINIMAL, "outcome": "maybe"}, "outcome", "Input should be"),
        ({**MINIMAL, "time": "2026-11-27"}, "time", "offset"),
        ({**MINIMAL, "time": "yesterday"}, "time", "not an RFC 3339 timestamp"),
        ({**MINIMAL, "trace": {"trace_id": "ABC"}}, "trace.trace_id", "pattern"),
        ({**MINIMAL, "trace": {"trace_id": "0" * 32}}, "trace.trace_id", "all-zero"),
        ({**MINIMAL, "action": "has space"}, "action", "pattern"),
        ({**MINIMAL, "policy": {"decision": "perhaps"}}, "policy.decision", "Input should be"),
    ],
)
def test_errors_name_the_field_and_the_reason(event: dict, path: str, reason: str) -> None:
    errors = errors_of(event)
    assert any(e["path"] == path and reason in e["reason"] and e["item"] == 4 for e in errors), errors


def test_a_non_object_is_refused() -> None:
    assert errors_of(["not", "an", "event"])[0]["reason"] == "expected an object, got array"


def test_producers_cannot_claim_verification() -> None:
    event = validate_event({**MINIMAL, "actor": {"id": "a", "verified": True,
                                                 "verification_error": "x"}})
    assert "verified" not in event["actor"] and "verification_error" not in event["actor"]


def test_a_batch_validates_as_its_items_do() -> None:
    items = [
        MINIMAL,
        {**MINIMAL, "time": "2026-11-27T18:00:00+01:00", "actor": {"id": "bob", "verified": True}},
    ]
    assert validate_events(items) == [validate_event(item) for item in items]


def test_one_bad_item_fails_the_batch_call_and_is_named_alone() -> None:
    items = [MINIMAL, {"action": "x", "actor": {"id": 7}}, "not an object", MINIMAL]
    assert validate_events(items) is None
    batch = prepare_items(items, Caller("t1", "source", service="billing"), "2026-11-27T18:00:00.000000Z")
    assert [r.get("status") for r in batch.results] == [None, "rejected", "rejected", None]
    assert [(e["item"], e["path"]) for e in batch.errors] == [(1, "actor.id"), (2, "$")]
    assert [p.position for p in batch.prepared] == [0, 3]


def test_deep_nesting_is_refused() -> None:
    deep: dict = {}
    for _ in range(100):
        deep = {"x": deep}
    event = validate_event({**MINIMAL, "attributes": deep})
    with pytest.raises(InvalidEvent, match="nesting deeper"):
        canonical_bytes(event)


def test_integers_outside_i_json_are_refused() -> None:
    with pytest.raises(InvalidEvent, match="I-JSON"):
        canonical_bytes({"n": 2**60})


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=500)
@given(json_values)
def test_canonical_bytes_are_rfc8785(value: object) -> None:
    try:
        expected = rfc8785.dumps(value)
    except rfc8785.CanonicalizationError:
        expected = None
    if expected is None or _has_unsafe_number(value):  # I-JSON: no number beyond ±(2**53 - 1)
        with pytest.raises(InvalidEvent):
            canonical_bytes(value)
        return
    assert canonical_bytes(value) == expected


def _has_unsafe_number(value: object) -> bool:
    if isinstance(value, dict):
        return any(_has_unsafe_number(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_unsafe_number(v) for v in value)
    return type(value) in (int, float) and abs(value) > 2**53 - 1


def test_numbers_beyond_ijson_are_refused_however_written() -> None:
    for number in (2.0**64, 1e20, -1.5e300):
        with pytest.raises(InvalidEvent, match="I-JSON range"):
            canonical_bytes({"n": number})
    assert canonical_bytes({"n": 0.5, "m": 2**53 - 1}) == b'{"m":9007199254740991,"n":0.5}'


def test_keys_sort_by_utf16_code_units() -> None:
    # U+E000 sorts after U+1F600 in code points but before it in UTF-16 units.
    value = {"\U0001f600": 1, "\ue000": 2}
    assert canonical_bytes(value) == rfc8785.dumps(value)


def test_schema_in_docs_is_the_served_schema() -> None:
    path = Path(__file__).parents[2] / "docs" / "event.schema.json"
    assert json.loads(path.read_text()) == event_json_schema()
