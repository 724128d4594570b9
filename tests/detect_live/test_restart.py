"""Restarts in the middle of a correlation window neither miss nor repeat an alert.

The probe rule fires when one actor makes three ``test.probe`` calls within 10 minutes.
Events before a restart must still count after it (the window is rebuilt from the
log's tail), and an alert raised before a restart, or lost by a crash right after
the triggering event was acknowledged, must end up in the store and the log exactly
once.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from live_helpers import PROBE_RULES, alerts, log_events, now, post_events, probe, seconds, wait_until, write_config
from support.server import Server

BURST = "Probe Burst"


@pytest.fixture
def server(tmp_path: Path, store: str | None) -> Iterator[Server]:
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "probe.yml").write_text(PROBE_RULES)
    config = write_config(tmp_path / "auditfed.toml", rules=[tmp_path / "rules"], default_rules=False)
    srv = Server(tmp_path / "data", "--config", str(config), store=store).start()
    yield srv
    srv.stop()


def _bursts(srv: Server, actor: str) -> list[dict]:
    with srv.client(srv.admin_token) as client:
        return [a for a in alerts(client) if a["title"] == BURST and a["group"].get("actor.id") == actor]


def _raised_events(srv: Server, actor: str) -> list[dict]:
    with srv.client(srv.admin_token) as client:
        return [e for _, e in log_events(client)
                if e["action"] == "alert.raised" and e["attributes"].get("group", {}).get("actor.id") == actor]


def _send(srv: Server, events: list[dict]) -> list[int]:
    with srv.client(srv.admin_token) as client:
        return post_events(client, events)


def test_restart_in_the_middle_of_a_window_does_not_miss(server: Server) -> None:
    start = now() - seconds(60)
    first = _send(server, [probe("mallory", start), probe("mallory", start + seconds(1))])
    time.sleep(0.3)
    assert _bursts(server, "mallory") == []

    server.stop()
    server.start()
    [third] = _send(server, [probe("mallory", start + seconds(2))])
    [alert] = wait_until(lambda: _bursts(server, "mallory"))
    assert sorted(alert["indexes"]) == [*first, third]

    # Another restart replays the window again: the alert is not raised twice.
    server.stop()
    server.start()
    _send(server, [probe("someone-else", start + seconds(3))])  # something to process
    time.sleep(1.0)
    assert len(_bursts(server, "mallory")) == 1
    assert len(_raised_events(server, "mallory")) == 1


def test_crash_right_after_the_trigger_neither_misses_nor_repeats(server: Server) -> None:
    start = now() - seconds(30)
    _send(server, [probe("trudy", start), probe("trudy", start + seconds(1))])
    _send(server, [probe("trudy", start + seconds(2))])
    server.kill(signal.SIGKILL)  # maybe before, maybe after the alert was stored

    server.start()
    wait_until(lambda: _bursts(server, "trudy"))
    time.sleep(1.0)
    assert len(_bursts(server, "trudy")) == 1
    assert len(_raised_events(server, "trudy")) == 1

    server.kill(signal.SIGKILL)
    server.start()
    time.sleep(1.0)
    assert len(_bursts(server, "trudy")) == 1
    assert len(_raised_events(server, "trudy")) == 1


def test_events_committed_while_detection_lagged_are_detected_after_a_crash(server: Server) -> None:
    """Kill at once after many acks: what detection had not processed yet is, at start."""
    base = now() - seconds(20)
    actors = [f"actor-{n}" for n in range(20)]
    events = [probe(actor, base + seconds(i)) for actor in actors for i in range(3)]
    _send(server, events)
    server.kill(signal.SIGKILL)
    server.start()
    for actor in actors:
        wait_until(lambda a=actor: _bursts(server, a))
    time.sleep(0.5)
    with server.client(server.admin_token) as client:
        bursts = [a for a in alerts(client, limit=1000) if a["title"] == BURST]
        raised = [e for _, e in log_events(client) if e["action"] == "alert.raised"]
    assert sorted(a["group"]["actor.id"] for a in bursts) == sorted(actors)
    assert len(raised) == len(actors)
