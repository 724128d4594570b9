"""The answers through a real server: HTTP API and the CLI against it and its data dir."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .conftest import AnswersServer, run


def _get(server: AnswersServer, token: str, path: str, **params: Any) -> Any:
    with server.client(token) as http:
        response = http.get(path, params=params)
    assert response.status_code == 200, response.text
    return response.json()


def test_trace_api_orders_four_services_and_flags_nothing_missing(answers_server, auditor, scenario) -> None:
    trace = _get(answers_server, auditor, f"/v1/traces/{scenario['trace_id']}")
    assert trace["events"] == 4
    assert [s["service"] for s in trace["steps"]] == ["web-gateway", "billing-api", "postgresql", "s3-export"]
    assert [p["service"] for p in trace["services"]] == ["web-gateway", "billing-api", "postgresql", "s3-export"]
    assert trace["duration_ms"] == 45.0 and trace["missing_links"] == [] and trace["complete"]
    root = trace["tree"][0]
    assert len(trace["tree"]) == 1 and root["service"] == "web-gateway"
    assert root["children"][0]["children"][0]["children"][0]["service"] == "s3-export"
    assert root["children"][0]["after_parent_ms"] == 12.0


def test_trace_needs_a_reader_and_an_existing_id(answers_server, scenario) -> None:
    source = answers_server.token("source", service="web-gateway")
    with answers_server.client(source) as http:
        assert http.get(f"/v1/traces/{scenario['trace_id']}").status_code == 403
    with answers_server.client() as http:
        assert http.get(f"/v1/traces/{scenario['trace_id']}").status_code == 401
    with answers_server.client(answers_server.admin_token) as http:
        missing = http.get("/v1/traces/" + "0" * 32)
        assert missing.status_code == 404
        assert missing.headers["content-type"].startswith("application/problem+json")


def test_enforcement_api_reports_the_billing_gap(answers_server, auditor, scenario) -> None:
    answer = _get(answers_server, auditor, f"/v1/enforcement/{scenario['trace_id']}")
    assert answer["verdict"] == "gaps"
    assert [g["service"] for g in answer["gaps"]] == ["billing-api"]
    enforcers = {h["service"]: h["enforcers"] for h in answer["hops"]}
    assert enforcers == {"web-gateway": ["web-gateway"], "billing-api": [], "postgresql": ["pg-gateway"],
                         "s3-export": ["s3-export"]}


def test_timeline_api_expands_aliases_from_the_directory(answers_server, auditor, scenario) -> None:
    answer = _get(answers_server, auditor, "/v1/principals/alice@corp.example/timeline", limit=50)
    assert "pg:alice_rw" in answer["aliases"]
    services = [e["service"] for e in answer["events"]]
    # gateway, billing and the database (actor alice_rw, resolved by the directory) are alice's; the export
    # is ci-bot's (acting for her), not hers.
    assert services[:3] == ["postgresql", "billing-api", "web-gateway"]
    assert "s3-export" not in services
    assert answer["source_switches"] >= 2


def test_who_accessed_and_who_changed_api(answers_server, auditor, scenario) -> None:
    accessed = _get(answers_server, auditor, "/v1/who-accessed", resource="billing.invoices")
    assert [(a["who"], a["action"], a["class"]) for a in accessed["accesses"]] == [
        ("alice@corp.example", "db.query", "query")]
    exported = _get(answers_server, auditor, "/v1/who-accessed", resource="s3://exports/*")
    # the export's chain is the producer's word (no token proved it): shown as a claim
    export = exported["accesses"][0]
    assert "on_behalf_of" not in export and export["claimed"]["chain"][0]["principal"] == "alice@corp.example"
    changed = _get(answers_server, auditor, "/v1/who-changed", resource="billing-api/rate-limits")
    assert [(c["who"], c.get("reason"), c["where"]["ip"]) for c in changed["changes"]] == [
        ("carol@corp.example", None, "198.51.100.5"), ("bob@corp.example", "CHG-1 raise limits", "198.51.100.4")]
    assert changed["without_reason"] == 1
    unjustified = _get(answers_server, auditor, "/v1/unjustified-changes", since="now-1d", until="now")
    # (the log's own records of the tokens' creation, made without a reason, are changes too)
    assert [c["who"] for c in unjustified["changes"] if c["where"]["service"] != "auditfed"] == [
        "carol@corp.example"]
    assert {c["action"] for c in unjustified["changes"] if c["where"]["service"] == "auditfed"} <= {
        "admin.token.create"}


def test_bad_time_bounds_are_a_clear_400(answers_server, auditor) -> None:
    with answers_server.client(auditor) as http:
        for value in ("yesterday", "2026-11-01 OR action:*", "'; DROP TABLE events; --"):
            response = http.get("/v1/unjustified-changes", params={"since": value})
            assert response.status_code == 400, value
            assert "not a time" in response.json()["detail"]


def test_cli_answers_against_the_server_and_the_data_dir(answers_server, auditor, scenario) -> None:
    remote = ["--url", answers_server.url, "--token", auditor]
    local = ["--data", str(scenario["data"])]
    trace_id = scenario["trace_id"]
    for where in (remote, local):
        drawn = run("trace", trace_id, *where, check=True).stdout
        assert "web-gateway" in drawn and "s3-export" in drawn and "each service's part" in drawn
        assert "└──" in drawn  # a tree
        as_json = json.loads(run("trace", trace_id, *where, "--json", check=True).stdout)
        assert as_json["events"] == 4
        verdict = run("enforcement", trace_id, *where, check=True).stdout
        assert "verdict: gaps" in verdict
        assert run("enforcement", trace_id, *where, "--check").returncode == 1
        accessed = run("who-accessed", "billing.invoices", *where, check=True).stdout
        assert "alice@corp.example" in accessed and "db.query" in accessed
        changed = json.loads(run("who-changed", "billing-api/rate-limits", *where, "--json", check=True).stdout)
        assert changed["count"] == 2
        unjustified = json.loads(run("unjustified-changes", "--since", "now-1d", *where, "--json",
                                     check=True).stdout)
        assert [c["who"] for c in unjustified["changes"] if c["where"]["service"] != "auditfed"] == [
            "carol@corp.example"]
        timeline = run("timeline", "bob@corp.example", *where, check=True).stdout
        assert "config.update" in timeline


def test_evidence_through_the_api_verified_offline_by_the_cli(answers_server, auditor, scenario, tmp_path) -> None:
    key = run("checkpoint", "--data", str(scenario["data"]), check=True)
    assert key.returncode == 0
    with answers_server.client() as http:
        vkey = http.get("/v1/log/key").text.strip()
        pinned_note = http.get("/v1/log/checkpoint").text
    pinned = tmp_path / "pinned.note"
    pinned.write_text(pinned_note)
    bundle = tmp_path / "trace.afev.jsonl"
    pinned_size = int(pinned_note.split("\n")[1])
    # the export is itself logged before its checkpoint is taken, so the bundle's tree is
    # newer than the pinned one: ask for a consistency proof from the pinned size
    exported = run("evidence", "export", f"trace:{scenario['trace_id']}", "-o", str(bundle), "--url",
                   answers_server.url, "--token", auditor, "--consistency-from", str(pinned_size), "--json",
                   check=True)
    assert json.loads(exported.stdout)["entries"] == 4
    assert json.loads(exported.stdout)["tree_size"] > pinned_size
    ok = run("evidence", "verify", str(bundle), "--key", vkey, "--pinned", str(pinned), check=True)
    assert "ok: 4 events verified" in ok.stdout and "consistent with the pinned" in ok.stdout
    # the export was recorded in the log, as every auditor read is
    with answers_server.client(answers_server.admin_token) as http:
        records = http.get("/v1/events", params={"q": "action:audit.evidence"}).json()["events"]
    assert records and records[0]["event"]["attributes"]["evidence_query"] == f"trace:{scenario['trace_id']}"
    # the same export from the data dir
    local = tmp_path / "local.afev.jsonl"
    run("evidence", "export", "resource:billing-api/rate-limits", "-o", str(local), "--data",
        str(scenario["data"]), check=True)
    assert "ok: 2 events" in run("evidence", "verify", str(local), "--key", vkey, check=True).stdout
    # one changed byte of an event: named, exit 1
    lines = bundle.read_bytes().split(b"\n")
    entry = json.loads(lines[2])
    data = bytearray(__import__("base64").b64decode(entry["data"]))
    data[10] ^= 0x20
    entry["data"] = __import__("base64").b64encode(bytes(data)).decode()
    lines[2] = json.dumps(entry, separators=(",", ":")).encode()
    bad = tmp_path / "bad.afev.jsonl"
    bad.write_bytes(b"\n".join(lines))
    failed = run("evidence", "verify", str(bad), "--key", vkey)
    assert failed.returncode == 1
    assert f"entry 2 (log index {entry['index']}) data" in failed.stdout
    # a wrong key
    wrong = run("evidence", "verify", str(bundle), "--key", "other.example+01020304+AU0qjT3uX+2n9rjZ1s3cT8kAoV4l0s"
                "d4pfmd4qrVB5Cb")
    assert wrong.returncode == 1


def test_evidence_api_refuses_bad_queries_before_streaming(answers_server, auditor) -> None:
    with answers_server.client(auditor) as http:
        response = http.post("/v1/evidence", json={"query": "action:db.* AND ("})
        assert response.status_code == 400
        assert response.headers["content-type"].startswith("application/problem+json")
        assert http.post("/v1/evidence", json={"query": "", "unknown": 1}).status_code == 400
        streamed = http.post("/v1/evidence", json={"query": "action:config.update", "limit": 1})
        assert streamed.status_code == 200
        lines = streamed.content.splitlines()
        assert json.loads(lines[0])["format"] == "auditfed-evidence/v1" and len(lines) == 3


def test_cli_errors_are_messages(answers_server, auditor, tmp_path: Path) -> None:
    result = run("trace", "not a trace!", "--url", answers_server.url, "--token", auditor)
    assert result.returncode == 1 and "trace id" in result.stderr
    result = run("evidence", "export", "action:(", "-o", str(tmp_path / "x"), "--url", answers_server.url)
    assert result.returncode == 1 and "error:" in result.stderr


def test_scoped_auditors_see_only_their_scope(answers_server, scenario) -> None:
    scoped = answers_server.token("auditor", service="billing-api")
    with answers_server.client(scoped) as http:
        trace = http.get(f"/v1/traces/{scenario['trace_id']}").json()
        assert [s["service"] for s in trace["steps"]] == ["billing-api"]
        assert http.get("/v1/who-accessed", params={"resource": "billing.invoices"}).json()["count"] == 0
        assert http.get("/v1/who-changed", params={"resource": "billing-api/rate-limits"}).json()["count"] == 2
        bundle = http.post("/v1/evidence", json={"query": f"trace:{scenario['trace_id']}"}).content.splitlines()
        assert json.loads(bundle[-1])["entries"] == 1
