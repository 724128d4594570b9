"""CloudEvents 1.0 over HTTP: structured, batch and binary modes; traceparent -> trace."""

from __future__ import annotations

import base64

import orjson
import pytest

from auditfed.errors import InvalidInput
from auditfed.event import validate_event
from auditfed.sources import decode

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{SPAN_ID}-01"


def ce(**extra):
    event = {
        "specversion": "1.0",
        "id": "A234-1234-1234",
        "source": "https://github.com/cloudevents/spec/pull",
        "type": "com.github.pull_request.opened",
        "subject": "123",
        "time": "2018-04-05T17:31:00Z",
        "datacontenttype": "application/json",
        "traceparent": TRACEPARENT,
        "authtype": "app_user",
        "authid": "alice",
        "data": {"action": "opened", "number": 123},
    }
    event.update(extra)
    return event


def _common(event):
    assert validate_event(event) == event
    assert event["trace"] == {"trace_id": TRACE_ID, "span_id": SPAN_ID}
    assert event["action"] == "com.github.pull_request.opened"
    assert event["source"] == {"service": "https://github.com/cloudevents/spec/pull",
                               "kind": "cloudevents"}
    assert event["actor"] == {"id": "alice", "type": "user"}
    assert event["resource"] == {"id": "123", "name": "123"}
    assert event["time"] == "2018-04-05T17:31:00.000000Z"


def test_structured_mode():
    body = orjson.dumps(ce())
    [event] = decode("cloudevents", body, "application/cloudevents+json; charset=UTF-8", {}).events
    _common(event)
    assert event["id"] == "A234-1234-1234"
    assert event["original"] == ce()
    assert event["attributes"]["cloudevents.extensions"] == {
        "traceparent": TRACEPARENT, "authtype": "app_user", "authid": "alice"}


def test_batch_mode_with_a_bad_member():
    batch = [ce(id="1"), {"specversion": "1.0", "id": "2", "type": "x.y"}, ce(id="3"), 7]
    decoded = decode("cloudevents", orjson.dumps(batch), "application/cloudevents-batch+json", {})
    assert [e["id"] for e in decoded.events] == ["1", "3"]
    for event in decoded.events:
        _common(event)
    errors = decoded.errors
    assert [e.position for e in errors] == [1, 3]
    assert "source" in errors[0].message


def test_binary_mode():
    headers = {
        "ce-specversion": "1.0",
        "ce-id": "bin-1",
        "ce-source": "https://github.com/cloudevents/spec/pull",
        "ce-type": "com.github.pull_request.opened",
        "ce-subject": "123",
        "ce-time": "2018-04-05T17:31:00Z",
        "ce-traceparent": TRACEPARENT,
        "ce-authtype": "app_user",
        "ce-authid": "alice",
        "ce-comment": "percent%20encoded%20%E2%9C%93",
    }
    decoded = decode("cloudevents", b'{"number": 123}', "application/json", headers)
    [event] = decoded.events
    _common(event)
    assert event["original"]["data"] == {"number": 123}
    assert event["original"]["comment"] == "percent encoded ✓"
    # binary data is kept base64
    [raw] = decode("cloudevents", b"\x00\x01", "application/octet-stream", headers).events
    assert raw["original"]["data_base64"] == base64.b64encode(b"\x00\x01").decode()


def test_actor_fallbacks_and_outcome():
    no_auth = ce(data={"actor": {"id": "bob", "type": "user"}, "outcome": "denied",
                       "reason": "JIRA-9"})
    del no_auth["authid"], no_auth["authtype"], no_auth["traceparent"]
    [event] = decode("cloudevents", orjson.dumps(no_auth), "application/cloudevents+json",
                     {}).events
    assert event["actor"] == {"id": "bob", "type": "user"}
    assert event["outcome"] == "denied"
    assert event["reason"] == "JIRA-9"
    assert "trace" not in event
    anonymous = ce(data={"x": 1})
    del anonymous["authid"]
    [event] = decode("cloudevents", orjson.dumps(anonymous), "application/cloudevents+json",
                     {}).events
    assert event["actor"] == {"id": "https://github.com/cloudevents/spec/pull", "type": "service"}


def test_invalid_traceparent_is_ignored_and_bad_bodies_raise():
    [event] = decode("cloudevents", orjson.dumps(ce(traceparent="00-" + "0" * 32 + "-" + "1" * 16
                                                    + "-01")), "application/cloudevents+json",
                     {}).events
    assert "trace" not in event
    with pytest.raises(InvalidInput):
        decode("cloudevents", b"{", "application/cloudevents+json", {})
    with pytest.raises(InvalidInput):
        decode("cloudevents", b"<xml/>", "application/xml", {})
