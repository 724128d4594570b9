"""POST /v1/ingest/{format} and ``auditfed send --format`` against a real server.

Real data: the Stratus Red Team CloudTrail files, the Kubernetes audit events, pgaudit's
regression output. Counts, actors, actions and outcomes are those the normalisers give
(checked against the data by hand in tests/sources); here: that they arrive, are bound
to the token, kept per record, redacted, and readable as OCSF.
"""

from __future__ import annotations

import base64
import gzip
import re
from pathlib import Path

import orjson
import pytest
from sources_api.conftest import K8S, PGAUDIT_OUT, STRATUS, entries, events_of, store_bytes
from support.server import Server, run_cli

from auditfed.sources import decode

K8S_SECRET_B64 = "MzFiNGQ0YjctMDAyNi00YzI3LWJiMGItNDk5ZDZkZjg1ZGJi"


def post(server: Server, token: str, fmt: str, body: bytes, content_type: str = "application/json",
         **headers: str):
    with server.client(token) as http:
        return http.post(f"/v1/ingest/{fmt}", content=body,
                         headers={"Content-Type": content_type, **headers})


def mine(server: Server, admin: str, service: str) -> list[dict]:
    return [e for _, e in events_of(server, admin) if e["source"]["service"] == service]


def stratus_files() -> list[Path]:
    return sorted(STRATUS.glob("*.json"))


def test_stratus_cloudtrail_files(server: Server, admin: str) -> None:
    token = server.token("source", service="aws-prod", environment="prod")
    expected = []
    for path in stratus_files():
        body = path.read_bytes()
        want = decode("cloudtrail", body, "application/json", {}).events
        answer = post(server, token, "cloudtrail", body)
        assert answer.status_code == 200, answer.text
        got = answer.json()
        assert got["format"] == "cloudtrail" and got["rejected"] == 0
        assert got["accepted"] + got["duplicates"] == len(want) > 0
        assert [r["record"] for r in got["results"]] == list(range(len(want)))
        expected += want
    stored = mine(server, admin, "aws-prod")
    assert len(stored) == len({e["id"] for e in expected}) == 310
    by_id = {e["id"]: e for e in stored}
    for want in expected:
        got = by_id[want["id"]]
        assert (got["action"], got["actor"], got["outcome"]) == (
            want["action"], want["actor"], want["outcome"])
        # the token wins; the normaliser's service stays as an attribute
        assert got["source"]["service"] == "aws-prod" and got["source"]["environment"] == "prod"
        assert got["attributes"]["origin.service"] == want["source"]["service"]
        assert got["source"]["account"] == want["source"]["account"]
        assert got["original"]["eventID"] == want["id"]
    actions = {e["action"] for e in stored}
    assert {"iam.CreateUser", "iam.CreateAccessKey", "signin.ConsoleLogin",
            "organizations.LeaveOrganization", "cloudtrail.StopLogging"} <= actions
    leave = next(e for e in stored if e["action"] == "organizations.LeaveOrganization")
    assert leave["outcome"] == "denied"
    assert leave["actor"]["id"].startswith("arn:aws:sts::307578594326:assumed-role/")
    # searchable by the original AWS service too
    with server.client(admin) as http:
        found = http.get("/v1/events", params={"q": "action:iam.CreateUser"}).json()["events"]
    assert found and all(e["event"]["source"]["service"] == "aws-prod" for e in found)


def test_admin_keeps_the_normalisers_service_and_gzip_files(server: Server, admin: str) -> None:
    body = (STRATUS / "aws.persistence.iam-create-admin-user.json").read_bytes()
    # a CloudTrail object as S3 holds it: a .json.gz file, sent as is
    answer = post(server, admin, "cloudtrail", gzip.compress(body), "application/gzip")
    assert answer.status_code == 200 and answer.json()["accepted"] + answer.json()["duplicates"] == 3
    # and with Content-Encoding
    again = post(server, admin, "cloudtrail", gzip.compress(body), **{"Content-Encoding": "gzip"})
    assert again.json()["duplicates"] == 3
    stored = mine(server, admin, "aws.iam")
    assert {e["action"] for e in stored} >= {"iam.CreateUser", "iam.AttachUserPolicy"}
    assert all("origin.service" not in e.get("attributes", {}) for e in stored)


def test_cloudtrail_with_one_broken_record(server: Server, admin: str) -> None:
    token = server.token("source", service="aws-broken")
    body = (STRATUS / "aws.persistence.iam-create-admin-user.json").read_text()
    whole = orjson.loads(body)
    records = whole["Records"] if isinstance(whole, dict) else whole
    text = orjson.dumps({"Records": records}, option=orjson.OPT_INDENT_2).decode()
    marker = f'"eventID": "{records[1]["eventID"]}"'
    broken = text.replace(marker, marker + ' "oops": ', 1)  # a syntax error inside record 1
    assert broken != text
    records[2]["eventTime"] = "yesterday"  # parses, but does not map to a valid event
    answer = post(server, token, "cloudtrail", broken.encode())
    assert answer.status_code == 200, answer.text
    got = answer.json()
    assert got["accepted"] == 2 and got["rejected"] == 1
    bad = got["results"][1]
    assert bad["status"] == "rejected" and bad["record"] == 1 and "JSON" in bad["error"]
    stored = mine(server, admin, "aws-broken")
    assert sorted(e["id"] for e in stored) == sorted([records[0]["eventID"], records[2]["eventID"]])
    # a record that maps to an invalid event is refused on its own, with the reason
    answer = post(server, token, "cloudtrail", orjson.dumps({"Records": records}))
    results = answer.json()["results"]
    assert results[2]["status"] == "rejected" and "time" in results[2]["error"]
    # nothing at all acceptable: a 422 listing every record
    only_bad = post(server, token, "cloudtrail", orjson.dumps({"Records": [records[2]]}))
    assert only_bad.status_code == 422
    assert only_bad.json()["results"][0]["record"] == 0
    assert len(mine(server, admin, "aws-broken")) == 3  # the earlier two + records[1] now


def test_k8s_audit_events_and_the_secret_never_stored(server: Server, admin: str) -> None:
    token = server.token("source", service="k8s-prod")
    want = {}
    for path in sorted(K8S.glob("*.json")):
        answer = post(server, token, "k8s-audit", path.read_bytes())
        assert answer.status_code == 200 and answer.json()["accepted"] == 1, answer.text
        want[path.stem] = answer.json()["results"][0]["index"]
    stored = {e["request_id"]: e for e in mine(server, admin, "k8s-prod")}
    assert len(stored) == 5
    actions = sorted((e["action"], e["actor"]["id"], e["outcome"]) for e in stored.values())
    assert actions == [
        ("k8s.create.clusterrolebindings", "minikube-user", "success"),
        ("k8s.create.namespaces", "system:anonymous", "success"),
        ("k8s.create.pods.exec", "minikube-user", "success"),
        ("k8s.create.secrets", "minikube-user", "success"),
        ("k8s.delete.secrets", "minikube-user", "success"),
    ]
    assert all(e["attributes"]["origin.service"] == "kubernetes" for e in stored.values())
    secret = next(e for e in stored.values() if e["action"] == "k8s.create.secrets")
    digest = secret["original"]["requestObject"]["data"]["access-key"]
    assert digest.startswith("[redacted:hmac-sha256:")
    # the secret is nowhere: not in the store's files, not in the log's entries
    plain = base64.b64decode(K8S_SECRET_B64)
    raw = store_bytes(server)
    leaves = b"".join(data for _, data in entries(server, admin))
    for haystack in (raw, leaves):
        assert K8S_SECRET_B64.encode() not in haystack
        assert plain not in haystack
    # NDJSON as the log backend writes it, and an EventList as the webhook sends it
    lines = b"\n".join(orjson.dumps(orjson.loads(p.read_bytes())) for p in sorted(K8S.glob("*.json")))
    ndjson = post(server, token, "k8s-audit", lines, "application/x-ndjson").json()
    assert ndjson["duplicates"] == 5 and ndjson["accepted"] == 0
    event_list = {"kind": "EventList", "apiVersion": "audit.k8s.io/v1",
                  "items": [orjson.loads(p.read_bytes()) for p in sorted(K8S.glob("*.json"))]}
    assert post(server, token, "k8s", orjson.dumps(event_list)).json()["duplicates"] == 5


def _prefixed_pgaudit() -> str:
    """pgaudit's regression output with each server message given a log_line_prefix."""
    text = PGAUDIT_OUT.read_text()
    return re.sub(r"(?m)^(NOTICE|WARNING|ERROR|LOG|INFO):  ",
                  r"2026-11-27 10:00:00.000 UTC [4242] regress@contrib_regression \1:  ", text)


def test_pgaudit_output_and_lines_that_are_not_pgaudit(server: Server, admin: str) -> None:
    token = server.token("source", service="pg-regress")
    text = _prefixed_pgaudit()
    answer = post(server, token, "pgaudit", text.encode(), "text/plain",
                  **{"X-Pgaudit-Skip-Non-Audit": "true"})
    assert answer.status_code == 200, answer.text
    got = answer.json()
    audits = text.count("AUDIT: ")
    assert got["accepted"] + got["duplicates"] == audits
    # psql's echo of the script is not a server log line: one clear error per line
    rejected = [r for r in got["results"] if r["status"] == "rejected"]
    assert rejected and all("not a PostgreSQL log line" in r["error"] for r in rejected)
    assert got["skipped"] > 0  # ERROR entries that are not AUDIT messages
    stored = mine(server, admin, "pg-regress")
    assert len(stored) == got["accepted"]
    assert all(e["actor"]["id"] == "regress" and e["action"].startswith("db.") for e in stored)
    assert {e["attributes"]["pgaudit.class"] for e in stored} >= {"READ", "WRITE", "DDL", "ROLE"}
    assert all(e["attributes"]["origin.service"] == "postgresql" for e in stored)
    # without the skip header, a log entry that is not pgaudit is a per-record error
    line = ("2026-11-27 10:00:01.000 UTC [4243] alice@appdb LOG:  AUDIT: SESSION,1,1,READ,SELECT,"
            "TABLE,public.t,SELECT 1,<none>\n"
            "2026-11-27 10:00:01.001 UTC [4243] alice@appdb LOG:  duration: 0.1 ms\n"
            "some random text\n")
    mixed = post(server, token, "pgaudit", line.encode(), "text/plain").json()
    assert mixed["accepted"] == 1 and mixed["rejected"] == 2
    errors = {r["record"]: r["error"] for r in mixed["results"] if r["status"] == "rejected"}
    assert "not a pgaudit 'AUDIT:' message" in errors[1]
    assert "not a PostgreSQL log line" in errors[2]


def test_cloudevents_github_okta(server: Server, admin: str) -> None:
    token = server.token("source", service="saas")
    ce = {"specversion": "1.0", "id": "ce-1", "source": "/billing", "type": "com.example.invoice.exported",
          "time": "2026-11-27T10:00:00Z", "traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01",
          "data": {"actor": {"id": "alice"}}}
    r = post(server, token, "cloudevents", orjson.dumps(ce), "application/cloudevents+json")
    assert r.status_code == 200 and r.json()["accepted"] == 1, r.text
    gh = {"action": "repo.create", "actor": "alice", "org": "acme", "repo": "acme/x",
          "created_at": 1795800000000, "_document_id": "gh-1"}
    r = post(server, token, "github-audit", orjson.dumps(gh))
    assert r.status_code == 200 and r.json()["accepted"] == 1, r.text
    okta = {"uuid": "okta-1", "eventType": "user.session.start", "published": "2026-11-27T10:00:00.000Z",
            "actor": {"id": "00u1", "alternateId": "alice@corp.example", "type": "User"},
            "outcome": {"result": "FAILURE"}, "client": {"ipAddress": "203.0.113.7"}}
    r = post(server, token, "okta", orjson.dumps(okta))
    assert r.status_code == 200 and r.json()["accepted"] == 1, r.text
    stored = {e["attributes"]["origin.service"]: e for e in mine(server, admin, "saas")}
    assert stored["/billing"]["trace"]["trace_id"] == "a" * 32
    assert stored["github"]["actor"]["id"] == "alice"
    assert stored["okta"]["outcome"] == "failure"
    # CloudEvents in a media type it does not take: 415
    wrong = post(server, token, "cloudevents", b"x", "text/csv")
    assert wrong.status_code == 415


def test_bad_requests(server: Server, admin: str) -> None:
    auditor = server.token("auditor")
    assert post(server, auditor, "okta", b"{}").status_code == 403
    assert post(server, admin, "nonsense", b"{}").status_code == 404
    assert post(server, admin, "otlp", b"{}").status_code == 404  # OTLP has /v1/logs
    assert post(server, admin, "cloudtrail", b"not json at all").status_code == 400
    corrupt = post(server, admin, "cloudtrail", b"\x1f\x8b\x08\x00garbage")
    assert corrupt.status_code == 400 and "gzip" in corrupt.json()["detail"]


def test_auditfed_send_source_formats(server: Server, admin: str, tmp_path: Path) -> None:
    token = server.token("source", service="sent")
    files = [str(p) for p in stratus_files()[:5]]
    result = run_cli("send", *files, "--format", "cloudtrail", "--url", server.url,
                     "--token", token, "--json")
    assert result.returncode == 0, result.stderr
    summary = orjson.loads(result.stdout)
    want = sum(len(decode("cloudtrail", Path(f).read_bytes(), None, {}).events) for f in files)
    assert summary["accepted"] == want and summary["rejected"] == 0
    k8s = run_cli("send", str(K8S / "create_secret.json"), "--format", "k8s", "--url", server.url,
                  "--token", token, "--json")
    assert orjson.loads(k8s.stdout)["accepted"] == 1
    pg = tmp_path / "postgresql.log"
    pg.write_text(_prefixed_pgaudit())
    sent = run_cli("send", str(pg), "--format", "pgaudit", "--url", server.url, "--token", token,
                   "--json")
    pg_summary = orjson.loads(sent.stdout)
    # (the regression run reuses statement ids, so some entries are duplicates by id)
    assert pg_summary["accepted"] + pg_summary["duplicates"] == _prefixed_pgaudit().count("AUDIT: ")
    assert sent.returncode == 1  # psql's echo lines are rejected, and said so
    assert all("not a PostgreSQL log line" in e or "not a pgaudit" in e for e in pg_summary["errors"])
    stored = mine(server, admin, "sent")
    assert len(stored) == want + 1 + pg_summary["accepted"]


def test_ocsf_through_api_and_cli(server: Server, admin: str) -> None:
    token = server.token("source", service="ocsf-src")
    body = (STRATUS / "aws.initial-access.console-login-without-mfa.json").read_bytes()
    answer = post(server, token, "cloudtrail", body).json()
    index = answer["results"][0]["index"]
    auditor = server.token("auditor")
    with server.client(auditor) as http:
        plain = http.get(f"/v1/events/{index}").json()
        ocsf = http.get(f"/v1/events/{index}", params={"format": "ocsf"}).json()
        bad = http.get(f"/v1/events/{index}", params={"format": "xml"})
    assert plain["event"]["action"] == "signin.ConsoleLogin"
    event = ocsf["event"]
    assert ocsf["format"] == "ocsf" and ocsf["index"] == index
    assert event["class_uid"] == 3002 and event["activity_id"] == 1
    assert event["type_uid"] == 300201 and event["metadata"]["version"]
    assert isinstance(event["time"], int) and event["severity_id"] >= 0
    assert event["metadata"]["sequence"] == index
    assert bad.status_code == 400
    result = run_cli("search", "action:signin.ConsoleLogin", "--format", "ocsf", "--url", server.url,
                     "--token", auditor)
    assert result.returncode == 0, result.stderr
    rows = orjson.loads(result.stdout)
    assert rows and all(r["class_uid"] == 3002 for r in rows)
    assert index in [r["metadata"]["sequence"] for r in rows]
    create = run_cli("search", "action:iam.CreateUser", "--format", "ocsf", "--url", server.url,
                     "--token", auditor)
    if orjson.loads(create.stdout):
        assert {r["class_uid"] for r in orjson.loads(create.stdout)} == {3001}


@pytest.mark.parametrize("fmt", ["json", "table"])
def test_search_other_formats_unchanged(server: Server, admin: str, fmt: str) -> None:
    result = run_cli("search", "", "--limit", "1", "--format", fmt, "--url", server.url, "--token", admin)
    assert result.returncode == 0, result.stderr
    if fmt == "json":
        assert "event" in orjson.loads(result.stdout)[0]
