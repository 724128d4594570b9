"""Rule tooling: check_rules (every SigmaHQ rule compiles) and test_rules output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from detect_helpers import CLOUDTRAIL, K8S, SIGMA, wrap_cloudtrail, wrap_k8s

from auditfed.detect import DEFAULT_RULES_DIR, check_rules, tooling


def test_every_shipped_rule_compiles() -> None:
    diagnostics = check_rules([DEFAULT_RULES_DIR])
    refused = [str(d) for d in diagnostics if d.severity != "ok"]
    assert refused == []
    shipped = list((DEFAULT_RULES_DIR / "sigmahq" / "rules").rglob("*.yml"))
    assert len(shipped) >= 135
    ok = [d for d in diagnostics if d.severity == "ok"]
    assert len(ok) == len(shipped) + 11  # plus auditfed's rule documents
    assert (DEFAULT_RULES_DIR / "sigmahq" / "LICENSE.DRL-1.1").exists()


def test_check_rules_reports_clear_errors(tmp_path: Path) -> None:
    (tmp_path / "broken.yml").write_text("title: [unclosed\n")
    (tmp_path / "unsupported.yml").write_text(
        "title: Windows rule\nlogsource:\n    product: windows\n"
        "detection:\n    sel:\n        EventID: 4625\n    condition: sel\n"
    )
    (tmp_path / "badref.yml").write_text(
        "title: Dangling correlation\ncorrelation:\n    type: event_count\n"
        "    rules: [nope]\n    group-by: [x]\n    timespan: 5m\n    condition:\n        gte: 2\n"
    )
    (tmp_path / "badcond.yml").write_text(
        "title: Undefined selection\nlogsource:\n    product: auditfed\n"
        "detection:\n    sel:\n        action: x\n    condition: sel and other\n"
    )
    diagnostics = {Path(d.path).name: d for d in check_rules([tmp_path]) if d.path}
    assert diagnostics["broken.yml"].severity == "error"
    assert "YAML" in diagnostics["broken.yml"].message
    assert "product=windows" in diagnostics["unsupported.yml"].message
    assert diagnostics["unsupported.yml"].title == "Windows rule"
    assert "nope" in diagnostics["badref.yml"].message
    assert "other" in diagnostics["badcond.yml"].message


def test_unsupported_correlation_condition_is_refused(tmp_path: Path) -> None:
    (tmp_path / "c.yml").write_text(
        "title: Base\nname: base\nlogsource:\n    product: auditfed\n"
        "detection:\n    sel:\n        action: x\n    condition: sel\n---\n"
        "title: Quiet\ncorrelation:\n    type: event_count\n    rules: [base]\n"
        "    group-by: [actor.id]\n    timespan: 5m\n    condition:\n        lt: 2\n"
    )
    errors = [d for d in check_rules([tmp_path]) if d.severity == "error"]
    assert len(errors) == 1 and errors[0].title == "Quiet"
    assert errors[0].construct == "correlation.condition"


def test_test_rules_reports_source_ids_and_positions() -> None:
    records = json.loads((CLOUDTRAIL / "aws.initial-access.console-login-without-mfa.json").read_text())
    pairs = [(i, wrap_cloudtrail(r)) for i, r in enumerate(records)]
    exec_pod = json.loads((K8S / "exec_pod.json").read_text())
    pairs.append((len(pairs), wrap_k8s(exec_pod)))
    out = list(tooling.test_rules([SIGMA], pairs))
    assert {
        "rule_id": "77caf516-34e5-4df9-b4db-20744fea0a60",
        "rule_title": "AWS Successful Console Login Without MFA",
        "event_id": records[0]["eventID"],
        "index": 0,
    } in out
    assert {
        "rule_id": "a1b0ca4e-7835-413e-8471-3ff2b8a66be6",
        "rule_title": "Potential Remote Command Execution In Pod Container",
        "event_id": exec_pod["auditID"],
        "index": len(pairs) - 1,
    } in out
    assert len(out) == 2


def test_test_rules_reports_rules_referenced_by_correlations() -> None:
    text_dir = DEFAULT_RULES_DIR / "auditfed"
    event = {
        "id": "evt-1",
        "action": "auth.login",
        "outcome": "failure",
        "actor": {"id": "alice"},
        "source": {"service": "idp", "kind": "app"},
        "time": "2026-01-01T00:00:00Z",
    }
    out = list(tooling.test_rules([text_dir], [(7, event)]))
    assert out == [
        {
            "rule_id": "0efd0e57-28dd-4c4b-93e1-449a4c848823",
            "rule_title": "Failed Login",
            "event_id": "evt-1",
            "index": 7,
        }
    ]


def test_script_check_main(capsys: pytest.CaptureFixture[str]) -> None:
    assert tooling.main([str(DEFAULT_RULES_DIR)]) == 0
    assert "0 refused" in capsys.readouterr().out
