"""Sigma correlation rules on event time: windows, lateness, groups, order, restart."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from detect_helpers import engine_from_yaml

from auditfed.detect import DEFAULT_RULES_DIR, Alert, DetectionEngine

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)

BASE = """title: Failed login
id: 0b7e0f55-1111-4111-8111-000000000001
name: failed
logsource:
    product: auditfed
detection:
    selection:
        action: auth.login
        outcome: failure
    condition: selection
---
title: Successful login
id: 0b7e0f55-1111-4111-8111-000000000002
name: success
logsource:
    product: auditfed
detection:
    selection:
        action: auth.login
        outcome: success
    condition: selection
"""


def corr(body: str) -> str:
    return (
        BASE
        + "---\ntitle: Correlation\nid: 0b7e0f55-1111-4111-8111-0000000000ff\nlevel: high\n"
        + "correlation:\n"
        + body
    )


COUNT3 = corr(
    "    type: event_count\n    rules: [failed]\n    group-by: [actor.id]\n"
    "    timespan: 10s\n    condition:\n        gte: 3\n"
)
ORDERED = corr("    type: temporal_ordered\n    rules: [failed, success]\n    group-by: [actor.id]\n    timespan: 1m\n")


def ev(seconds: float, outcome: str = "failure", actor: str = "alice", **extra) -> dict:
    event = {
        "action": "auth.login",
        "outcome": outcome,
        "actor": {"id": actor},
        "source": {"service": "idp", "kind": "app"},
        "time": (T0 + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
    }
    event.update(extra)
    return event


def run(engine: DetectionEngine, events: list[dict], start: int = 0, detections: bool = False) -> list[Alert]:
    out = []
    for i, e in enumerate(events, start):
        out.extend(a for a in engine.process(i, e) if detections or a.type != "detection")
    return out


def test_event_count_window_boundary_is_inclusive() -> None:
    assert len(run(engine_from_yaml(COUNT3), [ev(0), ev(5), ev(10)])) == 1
    assert run(engine_from_yaml(COUNT3), [ev(0), ev(5), ev(10.001)]) == []


def test_alert_fields() -> None:
    (alert,) = run(engine_from_yaml(COUNT3), [ev(0), ev(5), ev(10)])
    assert alert.rule_id == "0b7e0f55-1111-4111-8111-0000000000ff"
    assert alert.level == "high" and alert.type == "event_count"
    assert alert.indexes == (0, 1, 2) and alert.group == {"actor.id": "alice"}
    assert alert.first_time == "2026-03-01T12:00:00.000000Z"
    assert alert.last_time == "2026-03-01T12:00:10.000000Z"
    assert alert.key.startswith(alert.rule_id + ":alice:") and alert.value == 3


def test_late_and_out_of_order_within_lateness() -> None:
    engine = engine_from_yaml(COUNT3, allowed_lateness=30)
    alerts = run(engine, [ev(10), ev(0), ev(5)])
    assert len(alerts) == 1 and alerts[0].indexes == (0, 1, 2)
    # a late event completing a window that ends at an already-seen later event
    engine = engine_from_yaml(COUNT3, allowed_lateness=30)
    assert len(run(engine, [ev(0), ev(9), ev(4)])) == 1


def test_beyond_lateness_is_dropped() -> None:
    engine = engine_from_yaml(COUNT3, allowed_lateness=5)
    assert run(engine, [ev(100), ev(93), ev(94)]) == []
    state = next(iter(engine.states.values()))
    assert state.late == 2


def test_group_isolation() -> None:
    engine = engine_from_yaml(COUNT3)
    events = [ev(0, actor="alice"), ev(1, actor="bob"), ev(2, actor="alice"), ev(3, actor="bob")]
    assert run(engine, events) == []
    alerts = run(engine, [ev(4, actor="bob")], start=4)
    assert len(alerts) == 1 and alerts[0].group == {"actor.id": "bob"}


def test_events_without_group_field_do_not_correlate() -> None:
    engine = engine_from_yaml(COUNT3)
    events = [ev(i) for i in range(3)]
    for e in events:
        e["actor"] = {}
    assert run(engine, events) == []


def test_dedup_per_group_within_window() -> None:
    engine = engine_from_yaml(COUNT3)
    # 8 failures inside one 10 s bucket: one alert, not six
    assert len(run(engine, [ev(20 + i) for i in range(8)])) == 1
    # a new bucket, a new alert
    assert len(run(engine, [ev(40), ev(41), ev(42)], start=8)) == 1


def test_temporal_ordered_enforces_order() -> None:
    assert len(run(engine_from_yaml(ORDERED), [ev(0), ev(30, "success")])) == 1
    assert run(engine_from_yaml(ORDERED), [ev(0, "success"), ev(30)]) == []
    # out-of-order arrival: the event times decide the order, not the arrival
    engine = engine_from_yaml(ORDERED, allowed_lateness=60)
    assert len(run(engine, [ev(30, "success"), ev(0)])) == 1
    engine = engine_from_yaml(ORDERED, allowed_lateness=60)
    assert run(engine, [ev(0, "success"), ev(30)]) == []
    # too far apart
    assert run(engine_from_yaml(ORDERED), [ev(0), ev(61, "success")]) == []


def test_temporal_unordered() -> None:
    text = corr("    type: temporal\n    rules: [failed, success]\n    group-by: [actor.id]\n    timespan: 1m\n")
    assert len(run(engine_from_yaml(text), [ev(0, "success"), ev(30)])) == 1
    assert run(engine_from_yaml(text), [ev(0), ev(30)]) == []


def test_value_count() -> None:
    text = corr(
        "    type: value_count\n    rules: [failed]\n    group-by: [actor.ip]\n"
        "    timespan: 1m\n    condition:\n        field: actor.id\n        gte: 3\n"
    )
    engine = engine_from_yaml(text)

    def e(t: float, user: str) -> dict:
        return ev(t, actor=user, **{}) | {"actor": {"id": user, "ip": "203.0.113.7"}}

    assert run(engine, [e(0, "a"), e(1, "a"), e(2, "b")]) == []
    (alert,) = run(engine, [e(3, "c")], start=3)
    assert alert.value == 3


def test_value_sum_and_avg() -> None:
    text = corr(
        "    type: value_sum\n    rules: [failed]\n    group-by: [actor.id]\n"
        "    timespan: 1m\n    condition:\n        field: attributes.bytes\n        gt: 100\n"
    )
    engine = engine_from_yaml(text)
    assert run(engine, [ev(0, attributes={"bytes": 60}), ev(1, attributes={"bytes": 40})]) == []
    assert len(run(engine, [ev(2, attributes={"bytes": 1})], start=2)) == 1


def test_aliases_across_sources() -> None:
    text = """title: Grant
id: 0b7e0f55-2222-4111-8111-000000000001
name: grant
logsource:
    product: auditfed
detection:
    selection:
        action: iam.role.grant
    condition: selection
---
title: Export
id: 0b7e0f55-2222-4111-8111-000000000002
name: export
logsource:
    product: auditfed
detection:
    selection:
        action: data.export
    condition: selection
---
title: Grant then export
id: 0b7e0f55-2222-4111-8111-0000000000ff
correlation:
    type: temporal_ordered
    rules: [grant, export]
    group-by: [who]
    aliases:
        who:
            grant: resource.id
            export: actor.principal
    timespan: 1h
"""
    grant = {
        "action": "iam.role.grant",
        "actor": {"id": "root", "principal": "admin@corp.example"},
        "resource": {"type": "user", "id": "alice@corp.example"},
        "source": {"service": "iam", "kind": "cloudtrail"},
        "time": "2026-03-01T12:00:00Z",
        "original": {},
    }
    export = {
        "action": "data.export",
        "actor": {"id": "alice", "principal": "alice@corp.example"},
        "source": {"service": "warehouse", "kind": "pgaudit"},
        "time": "2026-03-01T12:10:00Z",
    }
    other = export | {"actor": {"id": "bob", "principal": "bob@corp.example"}}
    engine = engine_from_yaml(text)
    assert run(engine, [grant, other]) == []
    (alert,) = run(engine, [export], start=2)
    assert alert.group == {"who": "alice@corp.example"} and alert.indexes == (0, 2)


def _stream() -> list[dict]:
    """Failures and successes of three users over several windows."""
    events = []
    for k in range(120):
        actor = ("alice", "bob", "carol")[k % 3]
        outcome = "success" if k % 11 == 0 else "failure"
        events.append(ev(k * 1.0, outcome, actor))
    return events


def test_restart_in_the_middle_of_a_window_neither_misses_nor_repeats() -> None:
    events = _stream()
    reference = run(engine_from_yaml(COUNT3), events, detections=True)
    assert len([a for a in reference if a.type == "event_count"]) > 5
    keys = [a.key for a in reference]
    assert len(keys) == len(set(keys))
    for crash in (5, 37, 38, 61, 100):
        first = engine_from_yaml(COUNT3)
        before = run(first, events[:crash], detections=True)
        emitted = {a.key for a in before}
        restarted = engine_from_yaml(COUNT3)
        # the tail: every event within replay_seconds of the last processed one
        tail_start = max(0, crash - 1 - int(restarted.replay_seconds))
        missed = restarted.replay(((i, events[i]) for i in range(tail_start, crash)), emitted=emitted)
        assert missed == []
        after = run(restarted, events[crash:], start=crash, detections=True)
        assert [a.key for a in before + after] == keys, crash


def test_restart_recovers_an_alert_lost_in_the_crash() -> None:
    events = [ev(0), ev(1), ev(2), ev(3)]
    first = engine_from_yaml(COUNT3)
    before = run(first, events[:3])
    assert len(before) == 1
    restarted = engine_from_yaml(COUNT3)
    missed = restarted.replay(enumerate(events[:3]), emitted=set())  # alert never stored
    assert [a.key for a in missed] == [before[0].key]
    assert run(restarted, events[3:], start=3) == []  # and not raised again


def test_state_is_bounded() -> None:
    engine = engine_from_yaml(COUNT3, allowed_lateness=5)
    for i in range(5000):
        engine.process(i, ev(i * 4.0, actor=f"user{i % 50}"))
    state = next(iter(engine.states.values()))
    assert engine.state_size() <= 50 * 5
    assert len(state.emitted) <= 50 * 3


def test_replay_seconds_covers_chains() -> None:
    engine = DetectionEngine([DEFAULT_RULES_DIR / "auditfed"], allowed_lateness=60)
    # failed logins chain: 10m event_count under a 10m temporal_ordered; grants: 1h
    assert engine.replay_seconds == max(2 * 600 + 2 * 600, 2 * 3600, 2 * 300) + 60


def test_default_pack_failed_logins_followed_by_success() -> None:
    engine = DetectionEngine([DEFAULT_RULES_DIR / "auditfed"])
    events = [ev(i * 10) for i in range(5)] + [ev(60, "success")]
    alerts = run(engine, events)
    titles = [a.title for a in alerts]
    assert titles == ["Failed Logins Followed by a Successful Login"]
    assert alerts[0].indexes == (0, 1, 2, 3, 4, 5)
    # four failures are not enough
    engine = DetectionEngine([DEFAULT_RULES_DIR / "auditfed"])
    assert run(engine, [ev(i * 10) for i in range(4)] + [ev(60, "success")]) == []


def test_default_pack_single_event_rules() -> None:
    engine = DetectionEngine([DEFAULT_RULES_DIR / "auditfed"])
    unverified = ev(0, "success") | {
        "action": "secret.read",
        "actor": {"id": "x", "verified": False},
    }
    verified = unverified | {"actor": {"id": "x", "verified": True}}
    change = ev(0, "success") | {"action": "config.update"}
    with_reason = change | {"reason": "CHG-1234"}
    titles = lambda e: {a.title for a in engine.process(0, e)}  # noqa: E731
    assert "Unverified Actor Performed a Sensitive Action" in titles(unverified)
    assert "Unverified Actor Performed a Sensitive Action" not in titles(verified)
    assert "Change Without a Reason" in titles(change)
    assert "Change Without a Reason" not in titles(with_reason)
    assert "Change Without a Reason" in titles(change | {"reason": ""})
