"""Secrets never reach the log (issue #16, item 6), through every source's real ingest route.

Each case posts what a producer really sends (a k8s Secret changed by JSON patch, pgaudit
``ALTER ROLE ... PASSWORD``, header lists, URL credentials, secret-named keys, tokens in
text) to a real server, then reads the stored leaves back from ``/v1/log/entries``: the
secret is in no leaf's bytes (nor in the data dir's files), and the stored event shows
where it was (``[REDACTED:<kind>]`` or the keyed ``[redacted:hmac-sha256:...]`` digest).
"""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest
from support.server import Server

JWT = ("eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIn0.eyJzdWIiOiJhbGljZUBjb3JwLmV4YW1wbGUiLCJleHAiOjF9."
       "c2lnbmF0dXJlLW9mLXRoZS10b2tlbg")
PEM = "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIPemKeySecretBody0123456789abcdef\n-----END EC PRIVATE KEY-----"
AWS_ID = "AKIAIOSFODNN7EXAMPLE"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
GITHUB = "ghp_" + "S3cr3tGitHubTok" * 2 + "abcdef"
SLACK = "xoxb-123456789012-1234567890123-SlackSecretSlackSecret"


def _entries(server: Server, token: str) -> list[bytes]:
    with server.client(token) as http:
        size = http.get("/healthz").json()["size"]
        got = http.get("/v1/log/entries", params={"start": 0, "end": size})
        assert got.status_code == 200, got.text
        return [base64.b64decode(e["data"]) for e in got.json()["entries"]]


def _stored(server: Server, admin: str, service: str) -> list[dict[str, Any]]:
    return [e for e in map(orjson.loads, _entries(server, admin)) if e["source"]["service"] == service]


def _post(server: Server, token: str, path: str, body: bytes, content_type: str = "application/json"):
    with server.client(token) as http:
        answer = http.post(path, content=body, headers={"Content-Type": content_type})
    assert answer.status_code == 200, answer.text
    return answer.json()


def _assert_never_stored(server: Server, admin: str, secrets: list[str]) -> None:
    leaves = b"\n".join(_entries(server, admin))
    files = b"".join(p.read_bytes() for p in server.data_dir.rglob("*") if p.is_file())
    for secret in secrets:
        assert secret.encode() not in leaves, secret
        assert secret.encode() not in files, secret


@pytest.fixture(scope="module")
def sqlite_server(tmp_path_factory: pytest.TempPathFactory):
    # one SQLite server: what is tested is what reaches the leaf bytes, not the store
    server = Server(tmp_path_factory.mktemp("redact") / "data").start()
    yield server
    server.stop()


def test_events_api(sqlite_server: Server) -> None:
    server, admin = sqlite_server, sqlite_server.admin_token
    token = server.token("source", service="api")
    event = {
        "action": "deploy.run", "outcome": "success", "actor": {"id": "ci"},
        "resource": {"type": "repo", "id": "acme/app"}, "reason": f"token {JWT} used",
        "attributes": {
            "request": {"url": "https://deploy:Url-Pass-1@git.example.com/app.git?access_token=Qs-Tok-1"},
            "headers": [{"name": "Authorization", "value": "Bearer Hdr-Secret-1"},
                        {"Name": "Cookie", "Value": "sid=Hdr-Secret-2"},
                        {"name": "X-Api-Key", "value": "Hdr-Secret-3"},
                        {"name": "Accept", "value": "text/plain"}],
            "user": {"password_hash": "$argon2id$v=19$Hash-Secret-1", "private_key_pem": PEM,
                     "jwt": "Jwt-Member-1", "secretValue": "Sv-Secret-1", "password_policy": "strong",
                     "token_id": "tok-17", "key_id": "k-42"},
            "log": f"export AWS_ACCESS_KEY_ID={AWS_ID} aws_secret_access_key={AWS_SECRET}",
            "notes": [f"pushed with {GITHUB}", f"notified {SLACK}"],
        },
    }
    answer = _post(server, token, "/v1/events", orjson.dumps(event))
    assert answer["accepted"] == 1
    [stored] = _stored(server, admin, "api")
    attrs = stored["attributes"]
    assert stored["reason"] == "token [REDACTED:jwt] used"
    assert attrs["request"]["url"] == ("https://deploy:[REDACTED:url-password]@git.example.com/app.git"
                                       "?access_token=[REDACTED:url-secret]")
    assert [h.get("value", h.get("Value")).startswith("[redacted:hmac-sha256:") for h in attrs["headers"]] == [
        True, True, True, False]
    user = attrs["user"]
    for name in ("password_hash", "private_key_pem", "jwt", "secretValue"):
        assert user[name].startswith("[redacted:hmac-sha256:"), name
    # names that describe a secret, not hold one, are kept
    assert (user["password_policy"], user["token_id"], user["key_id"]) == ("strong", "tok-17", "k-42")
    assert attrs["log"] == ("export AWS_ACCESS_KEY_ID=[REDACTED:aws-access-key] "
                            "aws_secret_access_key=[REDACTED:aws-secret-key]")
    assert attrs["notes"] == ["pushed with [REDACTED:github-token]", "notified [REDACTED:slack-token]"]
    _assert_never_stored(server, admin, [
        JWT, "Url-Pass-1", "Qs-Tok-1", "Hdr-Secret", "Hash-Secret-1", "PemKeySecretBody", "Jwt-Member-1",
        "Sv-Secret-1", AWS_ID, AWS_SECRET, GITHUB, SLACK])


def _otlp_value(value: Any) -> dict[str, Any]:
    if isinstance(value, list):
        return {"arrayValue": {"values": [_otlp_value(v) for v in value]}}
    return {"stringValue": value}


def test_otlp_logs(sqlite_server: Server) -> None:
    server, admin = sqlite_server, sqlite_server.admin_token
    token = server.token("source", service="orders")
    attributes = {"audit.action": "db.query", "user.id": "alice",
                  "db.statement": "ALTER ROLE app WITH PASSWORD 'Otlp-Pg-Secret'",
                  "http.request.header.authorization": ["Bearer Otlp-Hdr-Secret"],
                  "url.full": "https://api.example.com/export?api_key=Otlp-Qs-Secret",
                  "db.connection_string": "host=db user=app password=Otlp-Conn-Secret"}
    body = {"resourceLogs": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "orders"}}]},
        "scopeLogs": [{"logRecords": [{
            "timeUnixNano": "1795800000000000000",
            "body": {"stringValue": "connected to postgres://app:Otlp-Url-Secret@db:5432/orders"},
            "attributes": [{"key": k, "value": _otlp_value(v)} for k, v in attributes.items()],
        }]}]}]}
    with server.client(token) as http:
        answer = http.post("/v1/logs", content=orjson.dumps(body), headers={"Content-Type": "application/json"})
    assert answer.status_code == 200, answer.text
    [stored] = _stored(server, admin, "orders")
    attrs = stored["attributes"]
    assert attrs["db.statement"] == "ALTER ROLE app WITH PASSWORD [REDACTED:password]"
    assert attrs["http.request.header.authorization"][0].startswith("[redacted:hmac-sha256:")
    assert attrs["url.full"] == "https://api.example.com/export?api_key=[REDACTED:url-secret]"
    _assert_never_stored(server, admin, ["Otlp-Pg-Secret", "Otlp-Hdr-Secret", "Otlp-Qs-Secret",
                                         "Otlp-Conn-Secret", "Otlp-Url-Secret"])
    assert b"[REDACTED:url-password]" in orjson.dumps(stored)


def test_k8s_secret_changed_by_json_patch(sqlite_server: Server) -> None:
    server, admin = sqlite_server, sqlite_server.admin_token
    token = server.token("source", service="k8s")
    value = base64.b64encode(b"K8s-Patch-Secret-1").decode()
    record = {
        "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "RequestResponse",
        "auditID": "5d0c1d5e-0f7a-4b7e-9f59-1f1f0c2a7a10", "stage": "ResponseComplete",
        "requestURI": "/api/v1/namespaces/prod/secrets/db", "verb": "patch",
        "user": {"username": "mallory", "groups": ["system:authenticated"]},
        "objectRef": {"resource": "secrets", "namespace": "prod", "name": "db", "apiVersion": "v1"},
        "responseStatus": {"code": 200},
        "requestObject": [{"op": "replace", "path": "/data/access-key", "value": value},
                          {"op": "add", "path": "/stringData", "value": {"password": "K8s-Patch-Secret-2"}}],
        "requestReceivedTimestamp": "2026-11-27T10:00:00.000000Z",
        "stageTimestamp": "2026-11-27T10:00:00.010000Z",
        "annotations": {"authorization.k8s.io/decision": "allow", "authorization.k8s.io/reason": "rbac"},
    }
    assert _post(server, token, "/v1/ingest/k8s-audit", orjson.dumps(record))["accepted"] == 1
    [stored] = _stored(server, admin, "k8s")
    patch = stored["original"]["requestObject"]
    assert [(op["op"], op["path"]) for op in patch] == [("replace", "/data/access-key"), ("add", "/stringData")]
    assert all(op["value"].startswith("[redacted:hmac-sha256:") for op in patch)
    assert stored["original"]["annotations"]["authorization.k8s.io/decision"] == "allow"
    _assert_never_stored(server, admin, [value, "K8s-Patch-Secret-2"])


def test_pgaudit_password_statements(sqlite_server: Server) -> None:
    server, admin = sqlite_server, sqlite_server.admin_token
    token = server.token("source", service="pg")
    prefix = "2026-11-27 10:00:00.000 UTC [4242] admin@appdb LOG:  AUDIT: SESSION,{n},1,ROLE,{cmd},,,{sql},<none>"
    statements = [
        ("ALTER ROLE", "ALTER ROLE app WITH PASSWORD 'Pg-Secret-1'"),
        ("CREATE ROLE", "CREATE USER bob PASSWORD 'Pg-Secret-2'"),
        ("ALTER ROLE", "ALTER USER bob ENCRYPTED PASSWORD 'md5Pg-Secret-3'"),
        ("CREATE ROLE", "CREATE ROLE carol LOGIN PASSWORD 'SCRAM-SHA-256$4096:Pg-Secret-4'"),
        ("ALTER ROLE", '"ALTER ROLE dave PASSWORD \'Pg-Secret-5\' VALID UNTIL \'2027-01-01\'"'),
    ]
    body = "\n".join(prefix.format(n=i, cmd=cmd, sql=sql) for i, (cmd, sql) in enumerate(statements, 1))
    assert _post(server, token, "/v1/ingest/pgaudit", body.encode(), "text/plain")["accepted"] == 5
    stored = _stored(server, admin, "pg")
    assert [e["attributes"]["db.statement"] for e in stored][:2] == [
        "ALTER ROLE app WITH PASSWORD [REDACTED:password]", "CREATE USER bob PASSWORD [REDACTED:password]"]
    _assert_never_stored(server, admin, [f"Pg-Secret-{i}" for i in range(1, 6)])


def test_cloudtrail_rds_and_redshift_parameters(sqlite_server: Server) -> None:
    server, admin = sqlite_server, sqlite_server.admin_token
    token = server.token("source", service="aws")
    identity = {"type": "IAMUser", "principalId": "AIDA45XCCHPPLELFTIIM", "accountId": "903144391865",
                "arn": "arn:aws:iam::903144391865:user/christophe", "userName": "christophe",
                "accessKeyId": AWS_ID}
    common = {"eventVersion": "1.09", "userIdentity": identity, "awsRegion": "eu-west-1",
              "sourceIPAddress": "203.0.113.7", "userAgent": "aws-cli/2", "eventType": "AwsApiCall",
              "recipientAccountId": "903144391865", "readOnly": False, "managementEvent": True}
    records = [
        {**common, "eventID": "0b3c1c0e-1111-4a4a-9b9b-000000000001", "eventTime": "2026-11-27T10:00:00Z",
         "eventSource": "redshift-data.amazonaws.com", "eventName": "ExecuteStatement",
         "requestParameters": {"clusterIdentifier": "dw", "database": "dev",
                               "sql": "CREATE USER bob PASSWORD 'Redshift-Secret-1'"}},
        {**common, "eventID": "0b3c1c0e-1111-4a4a-9b9b-000000000002", "eventTime": "2026-11-27T10:00:01Z",
         "eventSource": "rds.amazonaws.com", "eventName": "ModifyDBInstance",
         "requestParameters": {"dBInstanceIdentifier": "db1", "masterUserPassword": "Rds-Secret-1",
                               "applyImmediately": True}},
        {**common, "eventID": "0b3c1c0e-1111-4a4a-9b9b-000000000003", "eventTime": "2026-11-27T10:00:02Z",
         "eventSource": "secretsmanager.amazonaws.com", "eventName": "PutSecretValue",
         "requestParameters": {"secretId": "arn:aws:secretsmanager:eu-west-1:903144391865:secret:db-AbCdEf",
                               "secretString": '{"password":"Sm-Secret-1"}'}},
    ]
    answer = _post(server, token, "/v1/ingest/cloudtrail", orjson.dumps({"Records": records}))
    assert answer["accepted"] == 3
    by_name = {e["original"]["eventName"]: e for e in _stored(server, admin, "aws")}
    sql = by_name["ExecuteStatement"]["original"]["requestParameters"]["sql"]
    assert sql == "CREATE USER bob PASSWORD [REDACTED:password]"
    put = by_name["PutSecretValue"]
    # the ARN naming the secret and the access key id naming the key are kept
    assert put["original"]["requestParameters"]["secretId"].endswith(":secret:db-AbCdEf")
    assert put["original"]["userIdentity"]["accessKeyId"] == AWS_ID
    _assert_never_stored(server, admin, ["Redshift-Secret-1", "Rds-Secret-1", "Sm-Secret-1"])


def test_cloudevents_github_okta(sqlite_server: Server) -> None:
    server, admin = sqlite_server, sqlite_server.admin_token
    token = server.token("source", service="saas")
    ce = {"specversion": "1.0", "id": "ce-secret-1", "source": "/billing", "type": "com.example.webhook.sent",
          "time": "2026-11-27T10:00:00Z",
          "data": {"actor": {"id": "alice"}, "target": "https://hook:Ce-Url-Secret@hooks.example.com/in",
                   "headers": [{"name": "Set-Cookie", "value": "sid=Ce-Cookie-Secret"}]}}
    assert _post(server, token, "/v1/ingest/cloudevents", orjson.dumps(ce),
                 "application/cloudevents+json")["accepted"] == 1
    gh = {"action": "hook.create", "actor": "alice", "org": "acme", "repo": "acme/app",
          "created_at": 1795800000000, "_document_id": "gh-secret-1",
          "config": {"url": "https://hooks.slack.com/services/T0AAAAAAA/B0BBBBBBB/GhSlackHookSecret123",
                     "secret": "Gh-Hook-Secret"}}
    assert _post(server, token, "/v1/ingest/github-audit", orjson.dumps(gh))["accepted"] == 1
    okta = {"uuid": "okta-secret-1", "eventType": "user.session.start", "published": "2026-11-27T10:00:00.000Z",
            "actor": {"id": "00u1", "alternateId": "alice@corp.example", "type": "User"},
            "outcome": {"result": "SUCCESS"},
            "debugContext": {"debugData": {
                "requestUri": "/oauth2/v1/authorize?client_id=x&id_token=Okta-Qs-Secret&state=s",
                "url": f"/login?{JWT}"}}}
    assert _post(server, token, "/v1/ingest/okta", orjson.dumps(okta))["accepted"] == 1
    _assert_never_stored(server, admin, ["Ce-Url-Secret", "Ce-Cookie-Secret", "GhSlackHookSecret123",
                                         "Gh-Hook-Secret", "Okta-Qs-Secret", JWT])
    stored = orjson.dumps(_stored(server, admin, "saas"))
    for marker in (b"[REDACTED:url-password]", b"[REDACTED:slack-webhook]", b"[REDACTED:url-secret]",
                   b"[REDACTED:jwt]"):
        assert marker in stored, marker


def test_harmless_values_stay_exact(sqlite_server: Server) -> None:
    server, admin = sqlite_server, sqlite_server.admin_token
    token = server.token("source", service="plain")
    values = {"uuid": "123e4567-e89b-12d3-a456-426614174000",
              "digest": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
              "sql": "SELECT id, password_changed_at FROM users WHERE name = 'bob'",
              "arn": "arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/db-password-AbCdEf",
              "uri": "/api/v1/namespaces/default/secrets/db?timeout=30s", "key_id": AWS_ID}
    event = {"action": "x.read", "outcome": "success", "actor": {"id": "bob"},
             "trace": {"trace_id": "4bf92f3577b34da6a3ce929d0e0e4736", "span_id": "00f067aa0ba902b7"},
             "attributes": values}
    assert _post(server, token, "/v1/events", orjson.dumps(event))["accepted"] == 1
    [stored] = _stored(server, admin, "plain")
    assert stored["attributes"] == values
    assert stored["trace"]["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
