"""Many nodes on one PostgreSQL: follower acknowledgements, failover, database restarts."""

from __future__ import annotations

import base64
import json
import time

import httpx
import pytest
from cluster_helpers import Writers, log_ids
from support.server import run_cli

from auditfed.ledger import Verifier, leaf_hash, verify_checkpoint, verify_consistency, verify_inclusion

pytestmark = pytest.mark.postgres


def test_a_follower_acknowledges_and_the_client_finds_the_index_later(make_cluster) -> None:
    cluster = make_cluster(2)
    leader = cluster.leader()
    follower = next(s for s in cluster.nodes if s is not leader)
    token = leader.token("source", service="svc")
    event = {"id": "e-1", "action": "a.b", "actor": {"id": "alice"}}
    with follower.client(token) as http:
        body = http.post("/v1/events", json=[event, event]).json()
        assert body["results"][0] == {"id": "e-1", "index": None, "status": "accepted", "sequenced": False}
        assert body["results"][1]["status"] == "duplicate" and body["accepted"] == 1
        deadline = time.monotonic() + 10
        while True:
            found = http.get("/v1/events/by-id", params={"service": "svc", "id": "e-1"}).json()
            if (found["status"] == "sequenced" and found["hashes"] is not None) or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert found["status"] == "sequenced", found
        again = http.post("/v1/events", json=event).json()["results"][0]
        assert again == {"id": "e-1", "index": found["index"], "status": "duplicate"}
        assert http.get("/v1/events/by-id", params={"service": "other", "id": "e-1"}).status_code == 403
    with follower.client() as http:
        key = Verifier.from_key(http.get("/v1/log/key").text.strip())
    with follower.client(cluster.admin_token) as http:
        page = http.get("/v1/log/entries", params={"start": found["index"], "end": found["index"] + 1})
        data = base64.b64decode(page.json()["entries"][0]["data"])
        cp = verify_checkpoint(http.get("/v1/log/checkpoint", params={"size": found["checkpoint_size"]}).text, key)
    verify_inclusion(leaf_hash(data), found["index"], cp.size, [base64.b64decode(h) for h in found["hashes"]], cp.root)

    status = json.loads(run_cli("status", "--data", str(follower.data_dir), "--json", check=True).stdout)
    assert status["leader"] == cluster.status()["leader"] and status["pending"] == 0
    assert {n["role"] for n in status["nodes"]} == {"leader", "follower"}
    table = run_cli("status", "--url", follower.url, "--token", cluster.admin_token, check=True).stdout
    assert "leader" in table and "unsequenced" in table
    metrics = httpx.get(f"{leader.url}/metrics").text
    assert "auditfed_cluster_is_leader 1.0" in metrics and "auditfed_cluster_pending_events" in metrics
    assert "auditfed_cluster_is_leader 0.0" in httpx.get(f"{follower.url}/metrics").text


@pytest.mark.slow
def test_kill_9_of_the_leader_during_ingest(make_cluster) -> None:
    cluster = make_cluster(3)
    old_leader = cluster.leader()
    token = old_leader.token("source", service="load")
    with old_leader.client() as http:
        key = Verifier.from_key(http.get("/v1/log/key").text.strip())
    with Writers(cluster, token) as writers:
        time.sleep(2.0)
        with old_leader.client() as http:
            before = verify_checkpoint(http.get("/v1/log/checkpoint").text, key)
        old_leader.kill()
        killed_at = time.monotonic()
        while True:
            leader = cluster.status()["leader"]
            if leader and not leader.endswith(f":{old_leader.port}"):
                break
            assert time.monotonic() - killed_at < 10, "no new leader within 10 s"
            time.sleep(0.1)
        took_over = time.monotonic() - killed_at
        time.sleep(1.5)
    assert not writers.errors, writers.errors[:3]
    assert writers.acked and took_over < 10
    survivor = cluster.alive()[0]
    cluster.wait_drained()
    stored = log_ids(survivor, cluster.admin_token)
    missing = [i for i in writers.acked if i not in stored]
    twice = [i for i in writers.acked if len(stored.get(i, [])) > 1]
    assert not missing and not twice, (len(missing), len(twice))
    for event_id, index in writers.acked.items():
        assert index is None or stored[event_id] == [index]
    assert "ok:" in run_cli("verify", "--data", str(survivor.data_dir), check=True).stdout
    with survivor.client(cluster.admin_token) as http:
        after = verify_checkpoint(http.get("/v1/log/checkpoint").text, key)
        assert after.size > before.size
        proof = http.get("/v1/log/proof/consistency", params={"old": before.size, "new": after.size}).json()
    verify_consistency(before.size, after.size, before.root, after.root,
                       [base64.b64decode(h) for h in proof["hashes"]])


@pytest.mark.slow
def test_postgresql_restarted_under_load(make_cluster, cluster_pg) -> None:
    cluster = make_cluster(2)
    token = cluster.nodes[0].token("source", service="load")
    with Writers(cluster, token) as writers:
        time.sleep(1.5)
        cluster_pg.stop()
        time.sleep(4.0)  # longer than a request waits for a connection (2 s)
        outage_statuses = len(writers.statuses)
        cluster_pg.start()
        restarted = time.monotonic()
        # Both nodes take events again once they have reconnected.
        while True:
            with writers.lock:
                recent = writers.statuses[outage_statuses:]
            if recent.count(200) >= 10:
                break
            assert time.monotonic() - restarted < 30, f"no recovery: {recent[-20:]}"
            time.sleep(0.2)
        time.sleep(1.0)
    assert not writers.errors, writers.errors[:3]
    assert 503 in writers.statuses and writers.retry_after_missing == 0
    cluster.wait_drained()
    stored = log_ids(cluster.nodes[0], cluster.admin_token)
    missing = [i for i in writers.acked if i not in stored]
    twice = [i for i in writers.acked if len(stored.get(i, [])) > 1]
    in_db = cluster.nodes[0].sql("SELECT count(*) FROM events")
    assert not missing and not twice, (len(missing), len(twice), len(stored), in_db,
                                       sorted({writers.acked[i] is None for i in missing}))
    assert "ok:" in run_cli("verify", "--data", str(cluster.nodes[0].data_dir), check=True).stdout


def test_a_wrong_password_or_no_server_is_a_clear_start_up_error(cluster_pg, tmp_path) -> None:
    import psycopg

    with psycopg.connect(cluster_pg.conninfo(), autocommit=True) as conn:
        conn.execute("DROP ROLE IF EXISTS pwuser")
        conn.execute("CREATE ROLE pwuser LOGIN PASSWORD 'right'")
    hba = cluster_pg.datadir / "pg_hba.conf"
    hba.write_text("host all pwuser 127.0.0.1/32 scram-sha-256\n" + hba.read_text())
    with psycopg.connect(cluster_pg.conninfo(), autocommit=True) as conn:
        conn.execute("SELECT pg_reload_conf()")
    wrong = f"postgresql://pwuser:wrong@127.0.0.1:{cluster_pg.port}/postgres"
    result = run_cli("serve", "--data", str(tmp_path / "d"), "--store", wrong, timeout=60)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "password authentication failed" in result.stderr and "wrong" not in result.stderr
    nobody = "postgresql://postgres@127.0.0.1:9/postgres"
    result = run_cli("serve", "--data", str(tmp_path / "e"), "--store", nobody, timeout=60)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "cannot connect to the PostgreSQL store" in result.stderr
