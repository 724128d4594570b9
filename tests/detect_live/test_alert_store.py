"""The store's alert and webhook-outbox methods, on each store engine."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from auditfed.store import Store, open_store
from auditfed.store.base import AlertRecord, DeliveryRecord


@pytest.fixture
def db(tmp_path: Path, store: str | None) -> Iterator[Store]:
    opened = open_store(store or f"sqlite:///{tmp_path / 'a.db'}")
    yield opened
    opened.close()


def _alert(n: int, *, rule: str = "r1", level: str = "high") -> AlertRecord:
    return AlertRecord(
        alert_id=f"a{n}", dedup_key=f"{rule}:{n}", rule_id=rule, title=f"Rule {rule}", level=level,
        group={"actor.id": "mallory"}, indexes=(n, n + 1), first_time="2026-01-01T00:00:00Z",
        last_time="2026-01-01T00:00:01Z", raised_at="2026-01-01T00:00:02Z", log_index=100 + n,
        details={"type": "event_count", "value": 3.0},
    )


def test_alerts_are_stored_once_per_key_and_listed(db: Store) -> None:
    deliveries = [DeliveryRecord(f"d{n}", f"a{n}", "hook", b'{"n": %d}' % n, 0, 10.0 + n) for n in range(3)]
    assert db.add_alerts([_alert(n) for n in range(3)], deliveries) == ["a0", "a1", "a2"]
    # The same keys again (another id): skipped, with their deliveries.
    again = replace(_alert(1), alert_id="other")
    assert db.add_alerts([again], [DeliveryRecord("dx", "other", "hook", b"{}", 0, 0.0)]) == []
    assert db.stored_alert_keys(["r1:1", "r1:9"]) == {"r1:1"}

    got = db.get_alert("a1")
    assert got == _alert(1)
    assert db.get_alert("nope") is None
    assert [a.alert_id for a in db.list_alerts()] == ["a2", "a1", "a0"]
    assert [a.alert_id for a in db.list_alerts(before=102, limit=1)] == ["a1"]
    assert [a.alert_id for a in db.list_alerts(after=100)] == ["a1", "a2"]
    db.add_alerts([_alert(7, rule="r2", level="low")], [])
    assert [a.alert_id for a in db.list_alerts(rule_id="r2")] == ["a7"]
    assert [a.alert_id for a in db.list_alerts(level="low")] == ["a7"]

    updated = db.update_alert("a1", expected=("open",), status="acknowledged",
                              note={"note": "mine", "status": "acknowledged"}, updated_at="t1")
    assert updated is not None and updated.status == "acknowledged" and updated.updated_at == "t1"
    assert updated.notes == ({"note": "mine", "status": "acknowledged"},)
    assert db.update_alert("a1", expected=("open",), status="acknowledged", note={}, updated_at="t2") is None
    closed = db.update_alert("a1", expected=("open", "acknowledged"), status="closed",
                             note={"note": "done"}, updated_at="t3")
    assert closed is not None and len(closed.notes) == 2
    assert [a.alert_id for a in db.list_alerts(status="closed")] == ["a1"]


def test_the_outbox(db: Store) -> None:
    deliveries = [DeliveryRecord(f"d{n}", f"a{n}", "hook", b"body%d" % n, 0, 10.0 + n) for n in range(3)]
    deliveries.append(DeliveryRecord("e0", "a0", "other", b"x", 0, 5.0))
    db.add_alerts([_alert(n) for n in range(3)], deliveries)
    assert [d.delivery_id for d in db.pending_deliveries("hook", due_before=11.5)] == ["d0", "d1"]
    assert db.pending_deliveries("hook", due_before=11.5)[0].payload == b"body0"
    db.finish_delivery("d0", attempts=1, next_attempt_at=30.0, error="HTTP 500", delivered_at=None)
    failed = db.pending_deliveries("hook", due_before=100.0)
    assert [d.delivery_id for d in failed] == ["d1", "d2", "d0"]
    assert failed[-1].attempts == 1 and failed[-1].last_error == "HTTP 500"
    db.finish_delivery("d1", attempts=1, next_attempt_at=11.0, error=None, delivered_at="2026-01-01T00:00:03Z")
    assert [d.delivery_id for d in db.pending_deliveries("hook", due_before=1e300)] == ["d2", "d0"]
    assert [d.delivery_id for d in db.pending_deliveries("other", due_before=1e300, limit=1)] == ["e0"]
