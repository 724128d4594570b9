"""A hub and two nodes, real processes on loopback: outages, crashes, traces, witnessing."""

from __future__ import annotations

import signal
import stat
import uuid

import orjson
from federation_helpers import Hub, NodeProc, assert_exactly_once, caught_up, wait_for
from support.server import run_cli

from auditfed.ledger import CosignatureVerifier, Verifier, verify_checkpoint, verify_cosignature


def test_hub_down_while_nodes_ingest(hub: Hub, eu: NodeProc, us: NodeProc) -> None:
    eu.send(50)
    us.send(50)
    wait_for(lambda: caught_up(hub, eu, us), what="the hub to catch up")
    hub.server.stop()
    eu_ids = eu.send(1500)
    us_ids = us.send(1200)
    wait_for(lambda: eu.http.get("/v1/federation/status").json()["upstream"]["state"] == "retrying",
             what="the forwarder to notice the outage")
    hub.server.start()
    wait_for(lambda: caught_up(hub, eu, us), timeout=60, what="the hub to catch up after the outage")
    assert_exactly_once(hub, eu, us)
    at_hub = {e["attributes"]["federation"]["id"] for e in hub.federated()}
    assert set(eu_ids) <= at_hub and set(us_ids) <= at_hub


def test_node_killed_mid_batch(hub: Hub, eu: NodeProc, us: NodeProc) -> None:
    before = hub.position(eu.name)["position"]
    eu.send(6000)
    wait_for(lambda: hub.position(eu.name)["position"] > before + 200, what="forwarding to start")
    eu.server.kill(signal.SIGKILL)
    killed_at = hub.position(eu.name)["position"]
    assert killed_at < before + 6000  # killed while forwarding
    eu.restart()
    wait_for(lambda: caught_up(hub, eu), timeout=60, what="the restarted node to catch up")
    assert_exactly_once(hub, eu, us)


def test_hub_killed_mid_batch(hub: Hub, eu: NodeProc, us: NodeProc) -> None:
    """Entries committed at the hub whose acknowledgement was lost are not stored twice."""
    before = hub.position(us.name)["position"]
    us.send(6000)
    wait_for(lambda: hub.position(us.name)["position"] > before + 200, what="forwarding to start")
    hub.server.kill(signal.SIGKILL)
    hub.server.start()
    wait_for(lambda: caught_up(hub, eu, us), timeout=60, what="the hub to catch up after a crash")
    assert_exactly_once(hub, eu, us)


def test_trace_across_nodes_is_one_trace_at_the_hub(hub: Hub, eu: NodeProc, us: NodeProc) -> None:
    trace_id = uuid.uuid4().hex
    eu.send(2, trace_id=trace_id)
    us.send(3, trace_id=trace_id)
    wait_for(lambda: caught_up(hub, eu, us), what="the hub to catch up")

    def found() -> list:
        answer = hub.http.get("/v1/events", params={"q": f"trace:{trace_id}", "limit": 100})
        assert answer.status_code == 200, answer.text
        events = answer.json().get("events") or answer.json().get("results") or []
        return events if len(events) == 5 else []

    events = wait_for(found, what="the trace to be searchable at the hub")
    nodes = {(e.get("event") or e)["source"]["node"] for e in events}
    assert nodes == {"eu-prod", "us-prod"}
    services = {(e.get("event") or e)["source"]["service"] for e in events}
    assert services == {"svc-eu-prod", "svc-us-prod"}
    trace = hub.http.get(f"/v1/traces/{trace_id}")
    if trace.status_code != 404:  # the trace view, where the server has it
        assert trace.status_code == 200, trace.text
        assert str(trace.json()).count("svc-us-prod") >= 1 and "svc-eu-prod" in str(trace.json())


def test_cosigned_checkpoints_verify_with_the_witness_key(hub: Hub, eu: NodeProc) -> None:
    eu.send(10)
    wait_for(lambda: caught_up(hub, eu), what="the hub to catch up")
    witness = CosignatureVerifier.from_key(hub.http.get("/v1/federation/witness-key").text.strip())
    key_file = hub.server.data_dir / "witness.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    note = eu.http.get("/v1/log/checkpoint", params={"cosigned": 1}).text
    checkpoint = verify_checkpoint(note, Verifier.from_key(eu.key))
    assert checkpoint.size >= eu.size() - 1  # the forwarder's record of this read may follow
    assert verify_cosignature(note, witness) > 0
    assert eu.http.get("/v1/federation/checkpoint").text.count("\n— ") >= 2


def test_lag_in_status_and_metrics(hub: Hub, eu: NodeProc) -> None:
    wait_for(lambda: caught_up(hub, eu), what="the hub to catch up")
    status = run_cli("federation", "status", "--url", eu.server.url, "--token", eu.admin, "--json",
                     check=True)
    upstream = orjson.loads(status.stdout)["upstream"]
    assert upstream["state"] == "forwarding" and upstream["lag_entries"] is not None
    human = run_cli("federation", "status", "--url", eu.server.url, "--token", eu.admin, check=True)
    assert "lag" in human.stdout
    metrics = eu.http.get("/metrics").text
    assert "auditfed_federation_lag_seconds" in metrics
    assert "auditfed_federation_lag_entries" in metrics
    hub_status = run_cli("federation", "status", "--url", hub.url, "--token", hub.admin, check=True)
    assert "eu-prod" in hub_status.stdout and "us-prod" in hub_status.stdout
