"""Detection on a real server: a real CloudTrail attack record in, an alert out everywhere.

The alert must be stored, logged as an ``alert.raised`` event naming the matched log
index, streamed to SSE subscribers, POSTed (signed) to a real webhook receiver and
written to the server log; auditors acknowledge and close it with notes, logged.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from live_helpers import (
    CONSOLE_LOGIN_RULE,
    PROBE_RULES,
    Receiver,
    SSEReader,
    alerts,
    hook,
    ingest_console_login,
    log_events,
    now,
    post_events,
    probe,
    seconds,
    signature_ok,
    wait_until,
    write_config,
)
from support.server import Server
from support.stores import STORE_PARAMS, new_database


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture(scope="module", params=STORE_PARAMS)
def live(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
         receiver: Receiver) -> Iterator[Server]:
    store = None if request.param == "sqlite" else new_database(request.getfixturevalue("postgres"))
    base = tmp_path_factory.mktemp("live")
    (base / "rules").mkdir()
    (base / "rules" / "probe.yml").write_text(PROBE_RULES)
    config = write_config(base / "auditfed.toml", webhooks=[hook(receiver)], rules=[base / "rules"])
    server = Server(base / "data", "--config", str(config), store=store).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def auditor(live: Server) -> str:
    return live.token("auditor")


def test_console_login_without_mfa_alert_everywhere(live: Server, receiver: Receiver, auditor: str) -> None:
    stream = SSEReader(live, auditor)
    with live.client(live.admin_token) as admin, live.client(auditor) as reader:
        matched = ingest_console_login(admin)

        found = wait_until(lambda: [a for a in alerts(reader) if a["title"] == CONSOLE_LOGIN_RULE])
        assert len(found) == 1
        alert = found[0]
        assert alert["indexes"] == [matched]
        assert alert["status"] == "open"
        assert alert["level"] == "medium"
        assert alert["type"] == "detection"
        assert alert["log_index"] > matched

        # Logged: an alert.raised event by auditfed naming the matched index.
        event = reader.get(f"/v1/events/{alert['log_index']}").json()["event"]
        assert event["action"] == "alert.raised"
        assert event["id"] == alert["id"]
        assert event["source"]["service"] == event["source"]["kind"] == "auditfed"
        assert event["actor"] == {"id": "auditfed-detect", "type": "service"}
        assert event["attributes"]["indexes"] == [matched]
        assert event["attributes"]["rule_id"] == alert["rule_id"]
        assert event["attributes"]["rule_title"] == CONSOLE_LOGIN_RULE
        assert event["attributes"]["level"] == "medium"

        # One alert by id too.
        assert reader.get(f"/v1/alerts/{alert['id']}").json()["key"] == alert["key"]

        # Streamed (SSE id = the alert's log index).
        streamed = wait_until(lambda: [e for e in stream.events if e[1]["id"] == alert["id"]])
        assert streamed[0][0] == str(alert["log_index"])
        assert streamed[0][1]["indexes"] == [matched]
        stream.close()

        # A reconnecting client catches up from Last-Event-ID.
        again = SSEReader(live, auditor, headers={"Last-Event-ID": str(alert["log_index"] - 1)})
        wait_until(lambda: [e for e in again.events if e[1]["id"] == alert["id"]])
        again.close()

        # Webhook: one signed POST with the alert.
        posts = wait_until(lambda: [r for r in receiver.ok() if json.loads(r["body"])["id"] == alert["id"]])
        assert len(posts) == 1
        delivered = posts[0]
        assert signature_ok(delivered)
        assert delivered["headers"]["Content-Type"] == "application/json"
        assert delivered["headers"]["X-Auditfed-Delivery"]
        body = json.loads(delivered["body"])
        assert body["rule_id"] == alert["rule_id"] and body["indexes"] == [matched]
        assert body["log_index"] == alert["log_index"]

    # The server log: one structured line.
    lines = [json.loads(line) for line in live.log_path.read_text().splitlines() if line.startswith("{")]
    raised = [entry for entry in lines if entry.get("message", "").startswith("alert raised")
              and entry["alert"]["id"] == alert["id"]]
    assert len(raised) == 1
    assert raised[0]["message"] == f"alert raised: {alert['title']} [{alert['rule_id']}] (level {alert['level']})"
    assert raised[0]["alert"]["indexes"] == [matched]


def test_roles_on_alert_routes(live: Server) -> None:
    source = live.token("source", service="billing-api")
    scoped = live.token("auditor", service="billing-api")
    with live.client(source) as client:
        assert client.get("/v1/alerts").status_code == 403
        assert client.get("/v1/alerts/stream").status_code == 403
    with live.client(scoped) as client:
        assert client.get("/v1/alerts").status_code == 403
    with live.client() as anonymous:
        assert anonymous.get("/v1/alerts").status_code == 401


def test_acknowledge_and_close_are_logged(live: Server, auditor: str) -> None:
    with live.client(live.admin_token) as admin, live.client(auditor) as reader:
        [index] = post_events(admin, [probe("bob", now(), action="test.marker")])
        alert = wait_until(lambda: [a for a in alerts(reader, rule_id="6f1d2c1e-5a57-4c4e-9d55-0b7f3f7d1a03")
                                    if a["indexes"] == [index]])[0]

        missing = reader.post("/v1/alerts/nope/acknowledge", json={"note": "x"})
        assert missing.status_code == 404
        assert reader.post(f"/v1/alerts/{alert['id']}/acknowledge", json={}).status_code == 400

        acked = reader.post(f"/v1/alerts/{alert['id']}/acknowledge", json={"note": "looking at it"})
        assert acked.status_code == 200, acked.text
        assert acked.json()["status"] == "acknowledged"
        assert reader.post(f"/v1/alerts/{alert['id']}/acknowledge",
                           json={"note": "again"}).status_code == 409

        closed = reader.post(f"/v1/alerts/{alert['id']}/close", json={"note": "benign: test marker"})
        assert closed.status_code == 200
        doc = closed.json()
        assert doc["status"] == "closed"
        assert [n["status"] for n in doc["notes"]] == ["acknowledged", "closed"]
        assert [n["note"] for n in doc["notes"]] == ["looking at it", "benign: test marker"]
        assert reader.post(f"/v1/alerts/{alert['id']}/close", json={"note": "x"}).status_code == 409

        for note in doc["notes"]:
            event = reader.get(f"/v1/events/{note['log_index']}").json()["event"]
            assert event["action"] == f"alert.{note['status']}"
            assert event["reason"] == note["note"]
            assert event["resource"] == {"type": "alert", "id": alert["id"], "name": "Single Marker"}
            assert event["attributes"]["alert_log_index"] == alert["log_index"]

        assert [a["id"] for a in alerts(reader, status="closed")] == [alert["id"]]
        assert alert["id"] not in [a["id"] for a in alerts(reader, status="open")]


def test_alert_events_are_not_detected_again(live: Server, auditor: str) -> None:
    """A rule matching alert.* never fires on auditfed's own alert events: no loop."""
    with live.client(live.admin_token) as admin, live.client(auditor) as reader:
        [index] = post_events(admin, [probe("carol", now(), action="test.marker")])
        wait_until(lambda: [a for a in alerts(reader) if a["indexes"] == [index]])
        size = len(log_events(reader))
        import time

        time.sleep(1.0)
        assert [a for a in alerts(reader) if a["title"] == "Anything About Alerts"] == []
        # Nothing but the reads of this test were appended meanwhile.
        later = log_events(reader)
        assert all(e["action"].startswith("audit.") for _, e in later[size:])


def test_correlation_alert_names_every_matched_event(live: Server, auditor: str) -> None:
    start = now()
    with live.client(live.admin_token) as admin, live.client(auditor) as reader:
        indexes = post_events(admin, [probe("dave", start + seconds(i)) for i in range(3)])
        found = wait_until(lambda: [a for a in alerts(reader) if a["title"] == "Probe Burst"
                                    and a["group"].get("actor.id") == "dave"])
        assert len(found) == 1
        assert sorted(found[0]["indexes"]) == indexes
        assert found[0]["type"] == "event_count"


def test_detection_can_be_switched_off(tmp_path: Path, store: str | None) -> None:
    config = write_config(tmp_path / "off.toml", default_rules=False)
    server = Server(tmp_path / "data", "--config", str(config), store=store).start()
    try:
        with server.client(server.admin_token) as admin:
            ingest_console_login(admin)
            import time

            time.sleep(1.0)
            assert alerts(admin) == []
            assert all(e["action"] != "alert.raised" for _, e in log_events(admin))
    finally:
        server.stop()
