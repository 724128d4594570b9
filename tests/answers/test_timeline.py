"""Principal timelines: aliases from the directory, gaps, source switches, newest first."""

from __future__ import annotations

from pathlib import Path

from auditfed.identity.directory import Directory
from auditfed.query.timeline import build_timeline, principal_expr, principal_timeline
from auditfed.store.filters import Or

from .helpers import event, open_log

ALICE = "alice@corp.example"


def directory() -> Directory:
    return Directory(
        {ALICE: ["github:alice-gh", "pg:alice_rw", "k8s:oidc:alice@corp.example"]},
        [{"system": "aws", "pattern": "arn:aws:sts::*:assumed-role/*/{name}", "principal": "{name}@corp.example"}],
    )


def at(hour: int, minute: int = 0) -> str:
    return f"2026-11-27T{hour:02d}:{minute:02d}:00Z"


def alice_events() -> list[dict]:
    def ev(action: str, actor: str, kind: str, service: str, time: str, **kw: object) -> dict:
        e = event(action, actor, service=service, time=time, **kw)
        e["source"]["kind"] = kind
        return e

    return [
        ev("auth.login", "alice", "app", "idp", at(9), principal=ALICE),
        ev("repo.push", "alice-gh", "github-audit", "github", at(9, 5)),
        ev("db.read.select", "alice_rw", "pgaudit", "postgresql", at(9, 20)),
        ev("k8s.get.pods", "oidc:alice@corp.example", "k8s-audit", "k8s", at(11, 30)),  # after a 2h10 gap
        ev("s3.GetObject", "arn:aws:sts::123456789012:assumed-role/dev/alice", "cloudtrail", "aws.s3", at(11, 31)),
        # not alice: same actor id in a system where it is someone else's, and another person
        ev("repo.push", "alice_rw", "github-audit", "github", at(11, 40)),
        ev("auth.login", "bob", "app", "idp", at(11, 41), principal="bob@corp.example"),
    ]


def test_the_expression_covers_links_and_rules() -> None:
    expr = principal_expr(ALICE, directory())
    assert isinstance(expr, Or)
    values = [t.value for t in expr.items]  # type: ignore[union-attr]
    assert values[:4] == [ALICE, "alice-gh", "alice_rw", "oidc:alice@corp.example"]
    assert "arn:aws:sts::*:assumed-role/*/alice" in values
    assert principal_expr(ALICE, None).value == ALICE  # type: ignore[union-attr]


def test_pure_timeline_expands_aliases_marks_gaps_and_switches() -> None:
    rows = list(enumerate(alice_events()))
    answer = build_timeline(ALICE, rows, directory=directory())
    assert [e["action"] for e in answer["events"]] == [
        "s3.GetObject", "k8s.get.pods", "db.read.select", "repo.push", "auth.login"]
    assert [e["matched_by"] for e in answer["events"]] == [
        "aws:arn:aws:sts::123456789012:assumed-role/dev/alice", "k8s:oidc:alice@corp.example", "pg:alice_rw",
        "github:alice-gh", "principal"]
    gap, = answer["gaps"]
    assert gap == {"from": at(9, 20), "to": at(11, 30), "idle_s": 7800.0, "after_index": 2, "before_index": 3}
    assert answer["events"][1]["idle_before_s"] == 7800.0
    assert answer["events"][0]["switched_from"] == {"service": "k8s", "environment": None}
    assert answer["source_switches"] == 4
    assert {s["service"] for s in answer["sources"]} == {"idp", "github", "postgresql", "k8s", "aws.s3"}
    # a longer gap threshold hides it
    assert build_timeline(ALICE, rows, directory=directory(), gap_seconds=8000)["gaps"] == []


def test_without_a_directory_only_the_principal_and_its_own_id_match() -> None:
    answer = build_timeline(ALICE, list(enumerate(alice_events())))
    assert [e["action"] for e in answer["events"]] == ["auth.login"]


def test_timeline_from_the_store_newest_first_with_limit(tmp_path: Path) -> None:
    with open_log(tmp_path) as log:
        log.append(alice_events())
        log.append([event("db.query", "alice_rw", time=at(12, i), resource={"id": "t"}) for i in range(30)])
        answer = principal_timeline(log.store, ALICE, directory=directory(), limit=10)
        # the 30 app events with actor alice_rw are "app" system: not alice's pg alias
        assert answer["count"] == 5 and not answer["more"]
        pg = Directory({ALICE: ["app:alice_rw"]})
        answer = principal_timeline(log.store, ALICE, directory=pg, limit=10)
        assert answer["count"] == 10 and answer["more"]
        assert [e["time"] for e in answer["events"]] == [at(12, i)[:-1] + ".000000Z" for i in range(29, 19, -1)]
