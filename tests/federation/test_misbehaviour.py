"""Nodes that break their log's promises are refused and raise alerts at the hub.

Most nodes here are played by the test itself, speaking the protocol with a key of
its own (:class:`Rogue`); one is a real node whose database is edited and whose
checkpoint is re-signed over the rewritten history.
"""

from __future__ import annotations

import base64
import sqlite3
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import orjson
from federation_helpers import Hub, NodeProc, caught_up, wait_for
from support.server import run_cli
from test_units import Log, _leaves

from auditfed.event.canonical import canonical_event_bytes
from auditfed.event.model import format_time
from auditfed.federation.protocol import encode_entry
from auditfed.ledger import Checkpoint, Signer, TreeAppender, leaf_hash, sign_checkpoint


class Rogue:
    """A node played by the test: its own log in memory, its token at the hub."""

    def __init__(self, hub: Hub, name: str) -> None:
        self.hub = hub
        self.name = name
        self.log = Log(name)
        self.http = httpx.Client(base_url=hub.url, timeout=30,
                                 headers={"Authorization": f"Bearer {hub.enrol(name, self.log.signer.verifier_key())}"})

    def post(self, start: int, end: int, prior: int = 0, *, entries: list[bytes] | None = None) -> httpx.Response:
        batch = self.log.batch(start, end, prior)
        body = {"start": batch.start,
                "leaves": [encode_entry(d) for d in (entries if entries is not None else batch.entries)],
                "checkpoint": batch.note,
                "proof": [base64.b64encode(h).decode() for h in batch.proof],
                "prior": [base64.b64encode(h).decode() for h in batch.prior]}
        return self.http.post(f"/v1/federation/nodes/{self.name}/entries", json=body)


def alerts_about(hub: Hub, name: str) -> list[dict]:
    answer = hub.http.get("/v1/events", params={"q": "action:federation.alert", "limit": 100})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    rows = body.get("events") or body.get("results") or []
    return [r.get("event") or r for r in rows if (r.get("event") or r)["resource"]["id"] == name]


def _refused(hub: Hub, name: str, kind: str) -> None:
    position = hub.position(name)
    assert position["status"] == "refused", position
    assert position["reason"].startswith(kind)
    alerts = wait_for(lambda: alerts_about(hub, name), what="the alert event")
    assert alerts[0]["attributes"]["kind"] == kind


def test_skipped_index_is_refused_until_reinstated(hub: Hub) -> None:
    rogue = Rogue(hub, "rogue-skip")
    rogue.log.add(_leaves(6, "s"))
    assert rogue.post(0, 2).status_code == 200
    skipped = rogue.post(3, 6)
    assert skipped.status_code == 409
    assert skipped.headers["content-type"] == "application/problem+json"
    assert skipped.json()["kind"] == "skipped_indexes"
    _refused(hub, rogue.name, "skipped_indexes")
    refused = rogue.post(2, 6)
    assert refused.status_code == 403 and refused.json()["title"] == "Node refused"
    run_cli("node", "reset", rogue.name, "--url", hub.url, "--token", hub.admin, check=True)
    resumed = rogue.post(2, 6)
    assert resumed.status_code == 200, resumed.text
    assert resumed.json()["position"] == 6


def test_resend_is_not_stored_twice(hub: Hub) -> None:
    rogue = Rogue(hub, "rogue-resend")
    rogue.log.add(_leaves(4, "r"))
    assert rogue.post(0, 4).json()["accepted"] == 4
    again = rogue.post(0, 4)
    assert again.status_code == 200 and again.json()["accepted"] == 0
    assert again.json()["position"] == 4


def test_split_view_and_forged_entries(hub: Hub) -> None:
    rogue = Rogue(hub, "rogue-fork")
    rogue.log.add(_leaves(3, "f"))
    assert rogue.post(0, 3).status_code == 200
    forked = Log(rogue.name)
    forked.signer = rogue.log.signer
    forked.add(_leaves(3, "g"))
    rogue.log = forked
    answer = rogue.post(3, 3)
    assert answer.status_code == 409 and answer.json()["kind"] == "split_view"
    _refused(hub, rogue.name, "split_view")

    forger = Rogue(hub, "rogue-forge")
    forger.log.add(_leaves(3, "h"))
    answer = forger.post(0, 3, entries=[*forger.log.data[:2], b'{"forged": true}'])
    assert answer.status_code == 409 and answer.json()["kind"] == "rewritten"
    _refused(hub, forger.name, "rewritten")


def test_other_nodes_endpoints_are_forbidden(hub: Hub) -> None:
    one, other = Rogue(hub, "rogue-one"), Rogue(hub, "rogue-two")
    one.log.add(_leaves(1))
    assert one.http.get(f"/v1/federation/nodes/{other.name}/position").status_code == 403
    assert one.http.post(f"/v1/federation/nodes/{other.name}/entries", json={}).status_code == 403
    assert one.http.get("/v1/events").status_code == 403
    assert one.http.post("/v1/events", json={"action": "a.b", "actor": {"id": "x"}}).status_code == 403


def _rewrite_history(data_dir: Path, index: int) -> None:
    """Change one stored event, rebuild the tiles and re-sign a checkpoint with the node's key."""
    db = sqlite3.connect(data_dir / "auditfed.db")
    (data,) = db.execute("SELECT data FROM events WHERE idx = ?", (index,)).fetchone()
    event = orjson.loads(data)
    event["actor"]["id"] = "mallory"
    db.execute("UPDATE events SET data = ? WHERE idx = ?", (canonical_event_bytes(event), index))
    tree = TreeAppender()
    tree.extend(leaf_hash(d) for (d,) in db.execute("SELECT data FROM events ORDER BY idx"))
    db.execute("DELETE FROM tiles")
    db.executemany("INSERT INTO tiles (level, idx, hashes) VALUES (?, ?, ?)",
                   [(level, i, h) for (level, i), h in tree.take_dirty_tiles().items()])
    signer = Signer.from_key((data_dir / "log.key").read_text().strip())
    note = sign_checkpoint(Checkpoint(signer.name, tree.size, tree.root()), signer)
    db.execute("DELETE FROM checkpoints")
    db.execute("INSERT INTO checkpoints (size, root, note, created_at) VALUES (?, ?, ?, ?)",
               (tree.size, tree.root(), note, format_time(datetime.now(UTC))))
    db.commit()
    db.close()


def test_rewritten_node_database_is_refused(hub: Hub, base: Path) -> None:
    node = NodeProc(base, "tampered", hub)
    try:
        node.send(20)
        wait_for(lambda: caught_up(hub, node), what="the hub to catch up")
        node.server.stop()
        _rewrite_history(node.data_dir, 5)
        node.restart()
        wait_for(lambda: hub.position(node.name)["status"] == "refused", what="the hub to refuse")
        _refused(hub, node.name, "split_view")
        assert "rewritten" in hub.position(node.name)["reason"]
        wait_for(lambda: node.http.get("/v1/federation/status").json()["upstream"]["state"] == "refused",
                 what="the node to see the refusal")
        alerts = hub.http.get("/v1/alerts")
        if alerts.status_code == 200:  # the alert store, where the server has one
            assert "tampered" in alerts.text
    finally:
        node.stop()


def test_silent_node_raises_an_alert(base: Path) -> None:
    hub = Hub(base / "silent", env={"AUDITFED_FEDERATION_HEARTBEAT": "1.5"})
    try:
        rogue = Rogue(hub, "quiet")
        rogue.log.add(_leaves(2, "q"))
        assert rogue.post(0, 2).status_code == 200
        time.sleep(0.5)
        assert hub.position("quiet")["status"] == "active"
        wait_for(lambda: hub.position("quiet")["status"] == "refused", timeout=10, what="silence")
        _refused(hub, "quiet", "silent")
        assert rogue.post(2, 2).status_code == 403
    finally:
        hub.stop()
