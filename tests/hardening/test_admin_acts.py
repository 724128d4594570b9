"""Issue #16 item 5: every administrative act is in the log, and the auditors' trail is kept.

Token create/revoke and federation node add/reset, through the API or the CLI on the
data dir (with and without a running server), each append a meta-audit record naming
the act and the operator, never the token's secret; ``auditfed verify`` still passes.
Retention refuses to cut into meta-audit records younger than ``retention_floor``
(and logs the refusal); its runs from the CLI are logged.
"""

from __future__ import annotations

import json
import os
import pwd
import socket
from pathlib import Path
from typing import Any

import pytest
from support.server import Server, run_cli

from auditfed.config import load_settings
from auditfed.errors import ConfigError
from auditfed.ledger import Signer
from auditfed.node import Node, _retention_of, initialise
from auditfed.store.writer_lock import WriterLock


def records(server: Server, auditor: str, query: str) -> list[dict[str, Any]]:
    """Meta-audit records matching ``query``, oldest first, read as an auditor would."""
    with server.client(auditor) as http:
        found = http.get("/v1/events", params={"q": f"service:auditfed {query}", "order": "oldest",
                                               "limit": 100})
    assert found.status_code == 200, found.text
    return [e["event"] for e in found.json()["events"]]


def log_bytes(server: Server) -> bytes:
    return b"\n".join(data for (data,) in server.sql("SELECT data FROM events"))


def cli(server: Server, *args: str, check: bool = True) -> Any:
    return run_cli(*args, "--data", str(server.data_dir), check=check)


def token_id(server: Server, role: str, service: str | None = None) -> str:
    listed = json.loads(cli(server, "token", "list", "--json").stdout)
    return next(t["token_id"] for t in listed
                if t["role"] == role and t["service"] == service and not t["revoked_at"])


def assert_local_operator(event: dict[str, Any]) -> None:
    operator = event["attributes"]["operator"]
    assert operator["uid"] == os.getuid() and operator["host"] == socket.gethostname()
    assert operator["user"] == pwd.getpwuid(os.getuid()).pw_name
    assert operator["local"] is True and operator["via"] == "cli"
    assert event["actor"] == {"id": f"{operator['user']}@{operator['host']}", "type": "operator"}
    assert event["source"] == {"service": "auditfed", "kind": "auditfed"}


def test_token_acts_are_logged_with_and_without_a_running_server(tmp_path: Path, store: str | None) -> None:
    server = Server(tmp_path / "data", store=store)
    init_args = ["--store", store] if store else []
    server.admin_token = run_cli("init", "--data", str(server.data_dir), *init_args, check=True).stdout.strip()
    # No server runs: the CLI appends its records itself, under the data dir's writer lock.
    auditor = cli(server, "token", "create", "--role", "auditor").stdout.strip()
    offline = cli(server, "token", "create", "--role", "source", "--service", "billing",
                  "--environment", "prod").stdout.strip()
    offline_id = token_id(server, "source", "billing")
    cli(server, "token", "revoke", offline_id)
    assert json.loads(cli(server, "verify", "--json").stdout)["ok"]
    server.start()
    try:
        if store is None:  # the server holds the lock: a CLI can tell it runs
            assert not WriterLock(server.data_dir).try_acquire("test")
        # A server runs: the CLI hands its records over, the server appends them.
        online = cli(server, "token", "create", "--role", "source", "--service", "web").stdout.strip()
        online_id = token_id(server, "source", "web")
        cli(server, "token", "revoke", online_id)
        # Through the API: the admin token is the actor.
        with server.client(server.admin_token) as http:
            made = http.post("/v1/tokens", json={"role": "source", "service": "api-made",
                                                 "environment": "dev"})
            assert made.status_code == 201
            api_secret, api_id = made.json()["token"], made.json()["token_id"]
            assert http.delete(f"/v1/tokens/{api_id}").status_code == 204

        created = records(server, auditor, "action:admin.token.create")
        revoked = records(server, auditor, "action:admin.token.revoke")
        assert [e["attributes"]["service"] for e in created] == [None, "billing", "web", "api-made"]
        assert [e["attributes"]["token_id"] for e in revoked] == [offline_id, online_id, api_id]
        assert created[1]["attributes"]["environment"] == "prod"
        assert created[1]["attributes"]["role"] == "source"
        for event in (*created[:3], *revoked[:2]):
            assert_local_operator(event)
        admin_id = token_id(server, "admin")
        for event in (created[3], revoked[2]):
            assert event["actor"] == {"id": f"token:{admin_id}", "type": "admin"}
            assert event["attributes"]["environment"] == "dev" and "operator" not in event["attributes"]
        stored = log_bytes(server)
        for secret in (auditor, offline, online, api_secret, server.admin_token):
            assert secret.encode() not in stored and secret[4:].encode() not in stored
    finally:
        server.stop()
    assert json.loads(cli(server, "verify", "--json").stdout)["ok"]


def test_node_enrolment_and_reset_are_logged(fresh_server: Server) -> None:
    auditor = fresh_server.token("auditor")
    local_key = Signer.generate("node-local").verifier_key()
    api_key = Signer.generate("node-api").verifier_key()
    local_token = cli(fresh_server, "node", "add", "node-local", "--key", local_key).stdout.strip()
    cli(fresh_server, "node", "reset", "node-local", "--rebaseline")
    with fresh_server.client(fresh_server.admin_token) as http:
        enrolled = http.post("/v1/federation/nodes", json={"name": "node-api", "key": api_key})
        assert enrolled.status_code == 201
        assert http.post("/v1/federation/nodes/node-api/reinstate", json={}).status_code == 200
    enrolments = records(fresh_server, auditor, "action:admin.federation.enrol")
    resets = records(fresh_server, auditor, "action:admin.federation.reinstate")
    assert [(e["attributes"]["node"], e["attributes"]["key"]) for e in enrolments] == [
        ("node-local", local_key), ("node-api", api_key)]
    assert [(e["attributes"]["node"], e["attributes"]["rebaseline"]) for e in resets] == [
        ("node-local", True), ("node-api", False)]
    assert_local_operator(enrolments[0])
    assert_local_operator(resets[0])
    assert enrolments[1]["actor"]["type"] == "admin"
    stored = log_bytes(fresh_server)
    for secret in (local_token, enrolled.json()["token"]):
        assert secret.encode() not in stored
    assert json.loads(cli(fresh_server, "verify", "--json").stdout)["ok"]


def test_retention_refuses_to_cut_into_the_auditors_trail_and_logs_its_runs(fresh_server: Server) -> None:
    with fresh_server.client(fresh_server.admin_token) as http:  # the init token: no record yet
        events = [{"action": "a.b", "actor": {"id": f"u{i}"}, "source": {"service": "svc"}}
                  for i in range(40)]
        assert http.post("/v1/events", json=events).json()["accepted"] == 40
    auditor = fresh_server.token("auditor")  # its record lands at index 40
    with fresh_server.client(auditor) as http:
        assert http.get("/v1/events", params={"q": "actor:u3"}).status_code == 200  # a read, recorded
    size = fresh_server.sql("SELECT MAX(idx) FROM events")[0][0] + 1

    for dry in ([], ["--dry-run"]):
        refused = cli(fresh_server, "retention", "--before", str(size), *dry, check=False)
        assert refused.returncode == 1 and "Traceback" not in refused.stderr
        assert "retention refused" in refused.stderr and "meta-audit record 40" in refused.stderr
        assert "--before 40" in refused.stderr
    assert fresh_server.sql("SELECT MIN(idx) FROM events") == [(0,)]  # nothing removed
    [denied] = records(fresh_server, auditor, "action:auditfed.retention.apply outcome:denied")
    assert denied["attributes"]["protected_index"] == 40 and denied["attributes"]["before"] == size
    assert denied["attributes"]["floor"] == "400d"
    assert_local_operator(denied)

    done = json.loads(cli(fresh_server, "retention", "--before", "40", "--json").stdout)
    assert done["removed"] == (40 if fresh_server.store_kind == "sqlite" else 0)  # PostgreSQL: whole partitions
    [applied] = records(fresh_server, auditor, "action:auditfed.retention.apply outcome:success")
    assert applied["attributes"]["removed"] == done["removed"] and applied["attributes"]["before"] == 40
    assert_local_operator(applied)
    assert len(records(fresh_server, auditor, "action:admin.token.create")) == 1  # the trail is whole
    assert json.loads(cli(fresh_server, "verify", "--json").stdout)["ok"]


@pytest.mark.parametrize(("values", "problem"), [
    ({"retention": "90d"}, "shorter than retention_floor"),
    ({"retention_floor": "soon"}, "retention_floor"),
])
def test_a_retention_that_would_cut_into_the_floor_is_refused_at_start(
    tmp_path: Path, values: dict[str, str], problem: str
) -> None:
    with pytest.raises(ConfigError, match=problem):
        _retention_of(load_settings(data_dir=tmp_path, **values))
    age, floor = _retention_of(load_settings(data_dir=tmp_path, retention="90d", retention_floor="0"))
    assert (age.days, floor) == (90, None)  # type: ignore[union-attr]


def test_one_process_at_a_time_writes_a_data_dirs_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A second server (or a CLI appending) on an embedded log is refused or waits: two
    writers would fork the Merkle tree."""
    import auditfed.node as node_module

    settings = load_settings(data_dir=tmp_path / "d", ingest_workers=0, fsync=False)
    initialise(settings)
    first = WriterLock(settings.data_dir)
    assert first.try_acquire("auditfed serve on 127.0.0.1:1")
    monkeypatch.setattr(node_module, "WRITER_LOCK_WAIT", 0.2)
    with pytest.raises(ConfigError, match=r"auditfed serve on 127\.0\.0\.1:1"):
        Node(settings)
    first.release()
    node = Node(settings)
    try:
        assert not WriterLock(settings.data_dir).try_acquire("a CLI command")
    finally:
        node.close()
    assert WriterLock(settings.data_dir).try_acquire("a CLI command")
