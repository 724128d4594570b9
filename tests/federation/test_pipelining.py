"""Batches in flight at the hub: ordered by their checks, recorded in order, failing together.

The hub runs in this process (no ingest workers), the node is played by the test
(:class:`test_units.Log`), so that batches can be sent in any order and failures
injected.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from test_units import Log, _leaves

import auditfed.federation.hub as hub_module
from auditfed.config import load_settings
from auditfed.errors import StoreError, Unavailable
from auditfed.federation import Violation
from auditfed.federation.hub import Hub, NodeRefused, enrol_node, reinstate_node
from auditfed.federation.protocol import encode_entry
from auditfed.node import Node, initialise

NAME = "piped"


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    settings = load_settings(data_dir=tmp_path / "hub", ingest_workers=0, fsync=False)
    initialise(settings)
    running = Node(settings)
    running.start()
    yield running
    running.close()


@pytest.fixture
def log(node: Node) -> Log:
    log = Log(NAME)
    enrol_node(node.store, NAME, log.signer.verifier_key())
    log.add(_leaves(6, "p"))
    return log


def body(log: Log, start: int, end: int, entries: list[bytes] | None = None) -> bytes:
    batch = log.batch(start, end)
    entries = batch.entries if entries is None else entries
    return orjson.dumps({"start": batch.start, "leaves": [encode_entry(d) for d in entries],
                         "checkpoint": batch.note, "proof": [base64.b64encode(h).decode() for h in batch.proof]})


async def _after(delay: float, call: Any) -> Any:
    await asyncio.sleep(delay)
    return await call


def test_a_batch_sent_ahead_waits_for_the_one_before_it(node: Node, log: Log) -> None:
    hub = node.federation.hub

    async def both() -> list[dict[str, Any]]:
        ahead = hub.receive(NAME, body(log, 3, 6), follows=3)  # arrives first
        return await asyncio.gather(ahead, _after(0.2, hub.receive(NAME, body(log, 0, 3))))

    ahead, first = asyncio.run(both())
    assert (first["position"], first["accepted"]) == (3, 3)
    assert (ahead["position"], ahead["accepted"]) == (6, 3)
    assert hub.record(NAME).position == 6


def test_a_batch_whose_predecessor_never_comes_fails_without_an_alert(
    node: Node, log: Log, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hub_module, "FOLLOW_WAIT", 0.3)
    hub = node.federation.hub
    with pytest.raises(Unavailable):
        asyncio.run(hub.receive(NAME, body(log, 3, 6), follows=3))
    record = hub.record(NAME)
    assert (record.status, record.position) == ("active", 0)
    assert asyncio.run(hub.receive(NAME, body(log, 0, 6)))["position"] == 6


def test_a_batch_waiting_for_one_that_is_refused_gives_up_at_once(node: Node, log: Log) -> None:
    hub = node.federation.hub
    forged = body(log, 0, 3, entries=[*log.data[:2], b'{"forged": true}'])

    async def both() -> list[Any]:
        ahead = hub.receive(NAME, body(log, 3, 6), follows=3)
        return await asyncio.gather(ahead, _after(0.2, hub.receive(NAME, forged)), return_exceptions=True)

    started = time.monotonic()
    ahead, first = asyncio.run(both())
    assert time.monotonic() - started < hub_module.FOLLOW_WAIT
    assert isinstance(first, Violation) and first.kind == "rewritten"
    assert isinstance(ahead, Unavailable | NodeRefused)
    record = hub.record(NAME)
    assert (record.status, record.position, record.reason.split(":")[0]) == ("refused", 0, "rewritten")


def test_a_failed_record_fails_the_batches_in_flight_and_nothing_is_stored_twice(
    node: Node, log: Log, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub = node.federation.hub
    advance = Hub._advance

    def fail_once(self: Hub, *args: Any) -> None:
        monkeypatch.setattr(Hub, "_advance", advance)
        raise StoreError("the disk is full")

    monkeypatch.setattr(Hub, "_advance", fail_once)

    async def both() -> list[Any]:
        return await asyncio.gather(hub.receive(NAME, body(log, 0, 3)),
                                    hub.receive(NAME, body(log, 3, 6), follows=3), return_exceptions=True)

    first, second = asyncio.run(both())
    assert isinstance(first, StoreError) and isinstance(second, (StoreError, Unavailable))
    assert hub.record(NAME).position == 0
    # Their entries were committed: sent again, they are recognised, not stored twice.
    again = asyncio.run(hub.receive(NAME, body(log, 0, 6)))
    assert (again["position"], again["accepted"], again["duplicates"]) == (6, 0, 6)


def test_a_rebaseline_during_a_batch_wins_and_the_batch_fails_without_an_alert(
    node: Node, log: Log, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An admin re-baselines the node while its batch is being appended: the record
    is not moved past the admin's reset (the update is conditional), the batch fails
    with 503 (send again) and no alert is raised; sent again, nothing is stored twice."""
    hub = node.federation.hub
    advance = Hub._advance

    def admin_acts_first(self: Hub, *args: Any) -> bool:
        monkeypatch.setattr(Hub, "_advance", advance)
        reinstate_node(node.store, NAME, rebaseline=True)
        return advance(self, *args)

    asyncio.run(hub.receive(NAME, body(log, 0, 3)))
    monkeypatch.setattr(Hub, "_advance", admin_acts_first)
    with pytest.raises(Unavailable, match="admin acted"):
        asyncio.run(hub.receive(NAME, body(log, 3, 6)))
    record = hub.record(NAME)
    assert (record.position, record.status) == (0, "active")
    again = asyncio.run(hub.receive(NAME, body(log, 0, 6)))
    assert (again["position"], again["accepted"], again["duplicates"]) == (6, 0, 6)
    assert not node.store.list_alerts(status=None, rule_id=None, level=None, before=None, after=None,
                                      limit=10)
