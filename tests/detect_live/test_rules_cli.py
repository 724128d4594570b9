"""``auditfed rules check|test`` and ``auditfed alerts`` through the real CLI."""

from __future__ import annotations

import json
from pathlib import Path

from live_helpers import CONSOLE_LOGIN, CONSOLE_LOGIN_RULE, PROBE_RULES, alerts, ingest_console_login, wait_until
from support.server import Server, run_cli

from auditfed.detect import DEFAULT_RULES_DIR

K8S_EXEC = CONSOLE_LOGIN.parent.parent.parent / "k8s-audit" / "exec_pod.json"


def test_rules_check_accepts_the_default_pack() -> None:
    result = run_cli("rules", "check", str(DEFAULT_RULES_DIR))
    assert result.returncode == 0, result.stderr
    assert " 0 refused" in result.stderr


def test_rules_check_names_what_is_wrong(tmp_path: Path) -> None:
    (tmp_path / "good.yml").write_text(PROBE_RULES)
    (tmp_path / "windows.yml").write_text(
        "title: Windows rule\nlogsource:\n    product: windows\n"
        "detection:\n    sel:\n        EventID: 4625\n    condition: sel\n")
    (tmp_path / "broken.yml").write_text("title: [unclosed\n")
    result = run_cli("rules", "check", str(tmp_path))
    assert result.returncode == 1
    assert "windows.yml [Windows rule]: error:" in result.stdout
    assert "product=windows" in result.stdout
    assert "broken.yml" in result.stdout and "YAML" in result.stdout
    assert "4 rules compiled, 2 refused" in result.stderr

    as_json = run_cli("rules", "check", str(tmp_path), "--json")
    lines = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert {line["severity"] for line in lines} == {"ok", "error"}
    assert sum(line["severity"] == "error" for line in lines) == 2

    assert run_cli("rules", "check", str(tmp_path / "missing")).returncode == 1


def test_rules_test_on_a_cloudtrail_file() -> None:
    result = run_cli("rules", "test", str(DEFAULT_RULES_DIR), "--events", str(CONSOLE_LOGIN),
                     "--format", "cloudtrail", "--json")
    assert result.returncode == 0, result.stderr
    matches = [json.loads(line) for line in result.stdout.splitlines()]
    assert matches == [{
        "rule_id": "77caf516-34e5-4df9-b4db-20744fea0a60",
        "rule_title": CONSOLE_LOGIN_RULE,
        "event_id": "865d9377-9c6b-4fd7-8aad-725e95f6a140",
        "index": 0,
    }]
    # auto-detected format, people's table
    table = run_cli("rules", "test", str(DEFAULT_RULES_DIR), "--events", str(CONSOLE_LOGIN))
    assert table.returncode == 0 and "865d9377" in table.stdout


def test_rules_test_on_a_kubernetes_event() -> None:
    result = run_cli("rules", "test", str(DEFAULT_RULES_DIR), "--events", str(K8S_EXEC),
                     "--format", "k8s", "--json")
    assert result.returncode == 0, result.stderr
    [match] = [json.loads(line) for line in result.stdout.splitlines()]
    assert match["event_id"] == json.loads(K8S_EXEC.read_text())["auditID"]
    assert match["index"] == 0


def test_rules_test_on_auditfed_ndjson_with_a_correlation(tmp_path: Path) -> None:
    (tmp_path / "probe.yml").write_text(PROBE_RULES)
    events = [
        {"id": f"e{n}", "action": "test.probe", "actor": {"id": "mallory"},
         "source": {"service": "svc", "kind": "app"}, "time": f"2026-01-01T00:00:0{n}Z"}
        for n in range(3)
    ]
    events.insert(1, {"id": "other", "action": "test.other", "actor": {"id": "mallory"},
                      "source": {"service": "svc"}, "time": "2026-01-01T00:00:00Z"})
    path = tmp_path / "events.ndjson"
    path.write_text("\n".join(json.dumps(e) for e in events) + "\n")
    result = run_cli("rules", "test", str(tmp_path / "probe.yml"), "--events", str(path),
                     "--format", "ndjson", "--json")
    assert result.returncode == 0, result.stderr
    matches = [json.loads(line) for line in result.stdout.splitlines()]
    probes = [m for m in matches if m["rule_title"] == "Probe"]
    assert [m["index"] for m in probes] == [0, 2, 3]
    bursts = [m for m in matches if m["rule_title"] == "Probe Burst"]
    assert bursts == [{"rule_id": "6f1d2c1e-5a57-4c4e-9d55-0b7f3f7d1a01", "rule_title": "Probe Burst",
                       "event_id": "e2", "index": 3}]


def test_alerts_cli(fresh_server: Server) -> None:
    with fresh_server.client(fresh_server.admin_token) as admin:
        ingest_console_login(admin)
        [alert] = wait_until(lambda: alerts(admin))
    url, token = fresh_server.url, fresh_server.admin_token
    listed = run_cli("alerts", "list", "--url", url, "--token", token, "--json", check=True)
    assert [a["id"] for a in json.loads(listed.stdout)] == [alert["id"]]
    table = run_cli("alerts", "list", "--url", url, "--token", token, check=True)
    assert "Console Login" in table.stdout
    run_cli("alerts", "acknowledge", alert["id"], "--note", "on it", "--url", url, "--token", token,
            check=True)
    closed = run_cli("alerts", "close", alert["id"], "--note", "expected", "--url", url, "--token", token,
                     "--json", check=True)
    assert json.loads(closed.stdout)["status"] == "closed"
    again = run_cli("alerts", "close", alert["id"], "--note", "x", "--url", url, "--token", token)
    assert again.returncode == 1 and "409" in again.stderr
    local = run_cli("alerts", "list", "--data", str(fresh_server.data_dir), "--status", "closed", "--json",
                    check=True)
    assert [a["id"] for a in json.loads(local.stdout)] == [alert["id"]]
