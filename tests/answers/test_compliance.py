"""The regulator's questions on scenarios whose right answers are known."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from auditfed.demo import request_scenario
from auditfed.errors import InvalidInput, NotFound
from auditfed.query.compliance import (
    classify_action,
    enforcement,
    enforcement_from_rows,
    unjustified_changes,
    who_accessed,
    who_changed,
)

from .helpers import event, open_log

T = "2026-11-27T10:00:{:02d}Z"


@pytest.mark.parametrize(("action", "expected"), [
    ("db.query", ("access", "query")), ("db.read.select", ("access", "query")), ("data.export", ("access", "export")),
    ("invoice.export", ("access", "export")), ("report.download", ("access", "export")),
    ("k8s.get.secrets", ("access", "read")), ("k8s.list.pods", ("access", "list")),
    ("k8s.watch.configmaps", ("access", "list")), ("s3.GetObject", ("access", "read")),
    ("dynamodb.Query", ("access", "query")), ("ec2.DescribeInstances", ("access", "list")),
    ("document.read", ("access", "read")), ("user.get", ("access", "read")),
    ("config.update", ("change", "config")), ("db.ddl.create_table", ("change", "create")),
    ("db.write.insert", ("change", "create")), ("db.write.update", ("change", "update")),
    ("db.role.grant", ("change", "grant")), ("k8s.create.pods", ("change", "create")),
    ("k8s.patch.deployments", ("change", "update")), ("k8s.delete.secrets", ("change", "delete")),
    ("k8s.create.rolebindings", ("change", "grant")), ("iam.AttachUserPolicy", ("change", "grant")),
    ("s3.PutBucketPolicy", ("change", "grant")), ("s3.DeleteObject", ("change", "delete")),
    ("iam.CreateUser", ("change", "create")), ("user.delete", ("change", "delete")),
    ("auth.login", None), ("http.request", None),
])
def test_action_classes(action: str, expected: tuple[str, str] | None) -> None:
    assert classify_action(action) == expected


def scenario_events() -> list[dict]:
    def on(resource: str, action: str, actor: str, second: int, chain: list | None = None, **kw: object) -> dict:
        e = event(action, actor, time=T.format(second), resource={"id": resource}, **kw)
        if chain:
            e["actor"]["chain"] = chain
        return e

    return [
        on("billing.invoices", "db.query", "alice_rw", 1, principal="alice@corp.example"),
        on("billing.invoices", "db.query", "mallory", 2, outcome="denied",
           policy={"decision": "deny", "rule": "rbac/db-readers", "enforcer": "pg-gateway"}),
        on("billing.invoices", "db.ddl.alter_table", "dba", 3, reason="CHG-7 add column"),
        on("billing.invoices", "db.role.grant", "dba", 4),  # no reason
        on("billing.invoices", "data.export", "ci-bot", 5, chain=[{"id": "alice", "principal": "alice@corp.example"}]),
        on("billing.invoices", "auth.login", "alice", 6),  # neither
        on("billing.payments", "db.query", "bob", 7),  # another resource
        on("billing.payments", "config.update", "bob", 8),  # no reason, other resource
    ]


def test_who_accessed_and_who_changed(tmp_path: Path) -> None:
    with open_log(tmp_path) as log:
        log.append(scenario_events())
        accessed = who_accessed(log.store, "billing.invoices")
        assert [(a["who"], a["class"], a["denied"]) for a in accessed["accesses"]] == [
            ("ci-bot", "export", False), ("mallory", "query", True), ("alice@corp.example", "query", False)]
        assert accessed["accesses"][0]["on_behalf_of"] == ["alice@corp.example"]
        assert accessed["denied"] == 1 and accessed["count"] == 3
        assert who_accessed(log.store, "billing.*")["count"] == 4
        changed = who_changed(log.store, "billing.invoices")
        assert [(c["who"], c["class"], c.get("reason")) for c in changed["changes"]] == [
            ("dba", "grant", None), ("dba", "update", "CHG-7 add column")]
        assert changed["without_reason"] == 1
        assert changed["changes"][0]["where"] == {"service": "svc"}
        none = unjustified_changes(log.store, since="2026-11-27T10:00:00Z", until="2026-11-27T10:00:08Z")
        assert [(c["action"], c["resource"]) for c in none["changes"]] == [("db.role.grant", "billing.invoices")]
        everything = unjustified_changes(log.store)
        assert [c["action"] for c in everything["changes"]] == ["config.update", "db.role.grant"]
        for hostile in ("'; DROP TABLE events; --", "x' OR '1'='1", 'a"b', "billing.invoices\x00"):
            try:
                assert who_accessed(log.store, hostile)["count"] == 0
            except InvalidInput:
                assert "\x00" in hostile
        assert log.store.size() == 8
        with pytest.raises(InvalidInput):
            who_changed(log.store, "x", limit=0)


def demo_rows() -> list[tuple[int, dict]]:
    return list(enumerate(request_scenario(datetime(2026, 11, 27, 10, tzinfo=UTC))))


def test_demo_request_has_a_gap_at_the_billing_hop() -> None:
    rows = demo_rows()
    answer = enforcement_from_rows(rows[0][1]["trace"]["trace_id"], rows)
    assert answer["verdict"] == "gaps"
    assert [(h["service"], h["decision"], h["status"]) for h in answer["hops"]] == [
        ("web-gateway", "allow", "ok"), ("billing-api", None, "no decision"), ("postgresql", "allow", "ok"),
        ("s3-export", "allow", "ok")]


def test_enforced_when_every_hop_decides() -> None:
    rows = demo_rows()
    rows[1][1]["policy"] = {"decision": "allow", "rule": "abac/invoices", "enforcer": "billing-api"}
    answer = enforcement_from_rows(rows[0][1]["trace"]["trace_id"], rows)
    assert answer["verdict"] == "enforced" and answer["gaps"] == [] and answer["violations"] == []


def test_violated_when_the_request_goes_on_after_a_deny() -> None:
    rows = demo_rows()
    for _, e in rows:
        e.setdefault("policy", {"decision": "allow", "enforcer": e["source"]["service"]})
    rows[2][1]["policy"] = {"decision": "deny", "rule": "rbac/db-readers", "enforcer": "pg-gateway"}
    rows[2][1]["outcome"] = "denied"
    answer = enforcement_from_rows(rows[0][1]["trace"]["trace_id"], rows)
    assert answer["verdict"] == "violated"
    violation, = answer["violations"]
    assert (violation["service"], violation["reason"], violation["deny_index"]) == (
        "s3-export", "proceeded after a deny", 2)
    # a deny that the hop itself ignored
    rows = demo_rows()
    for _, e in rows:
        e["policy"] = {"decision": "allow", "enforcer": "x"}
    rows[0][1]["policy"] = {"decision": "deny", "enforcer": "web-gateway"}
    answer = enforcement_from_rows(rows[0][1]["trace"]["trace_id"], rows)
    assert answer["verdict"] == "violated"
    assert answer["violations"][0]["reason"] == "succeeded although its own policy decision was deny"


def test_a_deny_in_a_sibling_branch_does_not_taint_others() -> None:
    rows = demo_rows()
    trace_id = rows[0][1]["trace"]["trace_id"]
    for _, e in rows:
        e["policy"] = {"decision": "allow", "enforcer": "x"}
    # the export hangs off the gateway instead; the database (under billing) denies
    rows[3][1]["trace"]["parent_span_id"] = rows[0][1]["trace"]["span_id"]
    rows[2][1]["policy"] = {"decision": "deny", "enforcer": "pg-gateway"}
    rows[2][1]["outcome"] = "denied"
    assert enforcement_from_rows(trace_id, rows)["verdict"] == "enforced"


def test_enforcement_from_the_store(tmp_path: Path) -> None:
    with open_log(tmp_path) as log:
        events = [e for _, e in demo_rows()]
        log.append(events)
        assert enforcement(log.store, events[0]["trace"]["trace_id"])["verdict"] == "gaps"
        with pytest.raises(NotFound):
            enforcement(log.store, "0" * 32)
