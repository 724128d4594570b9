"""Kubernetes audit events (real Falco test data) -> auditfed events."""

from __future__ import annotations

import base64

import orjson
import pytest

from auditfed.event import validate_event
from auditfed.sources import Redactor, decode
from auditfed.sources.base import RecordError

FILES = {
    "anonymous_creates_namespace_foo.json": (
        "k8s.create.namespaces", "system:anonymous", "anonymous", "namespaces", "namespaces/foo",
        "success"),
    "attach_cluster_admin_role.json": (
        "k8s.create.clusterrolebindings", "minikube-user", "user", "clusterrolebindings",
        "rbac.authorization.k8s.io/clusterrolebindings/some-reader-binding", "success"),
    "create_secret.json": (
        "k8s.create.secrets", "minikube-user", "user", "secrets",
        "namespaces/sysdig-agent/secrets/sysdig-agent", "success"),
    "delete_secret.json": (
        "k8s.delete.secrets", "minikube-user", "user", "secrets",
        "namespaces/default/secrets/example-secret", "success"),
    "exec_pod.json": (
        "k8s.create.pods.exec", "minikube-user", "user", "pods/exec",
        "namespaces/default/pods/nginx-deployment-7998647bdf-phvq7", "success"),
}
SECRET_B64 = "MzFiNGQ0YjctMDAyNi00YzI3LWJiMGItNDk5ZDZkZjg1ZGJi"


def load(data_dir, name):
    return (data_dir / "k8s-audit" / name).read_bytes()


@pytest.mark.parametrize("name", sorted(FILES))
def test_each_real_event(data_dir, name):
    action, actor, actor_type, rtype, rid, outcome = FILES[name]
    decoded = decode("k8s-audit", load(data_dir, name), "application/json", {})
    assert decoded.errors == []
    [event] = decoded.events
    assert event == validate_event(event)
    assert event["action"] == action
    assert event["actor"]["id"] == actor
    assert event["actor"]["type"] == actor_type
    assert event["resource"]["type"] == rtype
    assert event["resource"]["id"] == rid
    assert event["outcome"] == outcome
    record = orjson.loads(load(data_dir, name))
    assert event["id"] == event["request_id"] == record["auditID"]
    assert event["policy"] == {"decision": "allow", "enforcer": "kube-apiserver"}
    assert event["source"] == {"service": "kubernetes", "kind": "k8s-audit"}
    assert event["original"] == record


def test_eventlist_and_ndjson_keep_one_event_per_audit_id_at_final_stage(data_dir):
    records = [orjson.loads(load(data_dir, n)) for n in sorted(FILES)]
    # the API server's stages of the create-secret request, and of the exec request
    create = next(r for r in records if r["objectRef"]["resource"] == "secrets"
                  and r["verb"] == "create")
    exec_ = next(r for r in records if r["objectRef"].get("subresource") == "exec")
    stages = [
        {**create, "stage": "RequestReceived"},
        {**exec_, "stage": "RequestReceived"},
        {**exec_, "stage": "ResponseStarted"},
        {**exec_, "stage": "ResponseComplete", "responseStatus": {"code": 200}},
    ]
    batch = [*stages, *records]
    event_list = {"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "items": batch}
    ndjson = b"\n".join(orjson.dumps(r) for r in batch) + b"\n"
    for body in (orjson.dumps(event_list), ndjson, orjson.dumps(batch)):
        decoded = decode("k8s-audit", body, "application/json", {})
        assert decoded.errors == []
        events = decoded.events
        assert len(events) == 5
        assert decoded.skipped == 4  # 9 records, 5 requests
        assert len({e["id"] for e in events}) == 5
        by_id = {e["id"]: e for e in events}
        assert by_id[exec_["auditID"]]["attributes"]["k8s.stage"] == "ResponseStarted"
        assert by_id[create["auditID"]]["attributes"]["k8s.stage"] == "ResponseComplete"


def test_impersonation_status_and_denied(data_dir):
    record = orjson.loads(load(data_dir, "delete_secret.json"))
    record["impersonatedUser"] = {"username": "system:serviceaccount:ci:deployer"}
    record["responseStatus"] = {"code": 403, "reason": "Forbidden"}
    record["annotations"] = {"authorization.k8s.io/decision": "forbid",
                             "authorization.k8s.io/reason": "no RBAC policy matched"}
    [event] = decode("k8s-audit", orjson.dumps(record), None, {}).events
    assert event["actor"]["chain"] == [{"id": "system:serviceaccount:ci:deployer",
                                        "type": "service"}]
    assert event["outcome"] == "denied"
    assert event["policy"] == {"decision": "deny", "enforcer": "kube-apiserver",
                               "reason": "no RBAC policy matched"}
    record["responseStatus"] = {"code": 404}
    record["annotations"] = {"authorization.k8s.io/decision": "allow"}
    [event] = decode("k8s-audit", orjson.dumps(record), None, {}).events
    assert event["outcome"] == "failure"


def test_broken_record_among_good_ones(data_dir):
    good = load(data_dir, "create_secret.json").strip()
    body = b"\n".join([good, b'{"kind": "Event", "auditID": "x", "stage"', b'{"kind":"Event"}',
                       load(data_dir, "exec_pod.json").strip()])
    decoded = decode("k8s-audit", body, None, {})
    assert len(decoded.events) == 2
    errors = decoded.errors
    assert [e.position for e in errors] == [1, 2]
    assert "invalid JSON" in errors[0].message
    assert "without auditID" in errors[1].message
    assert all(isinstance(e, RecordError) for e in errors)
    # NDJSON whose first line is broken, with an EventList-like "items" inside a record
    listing = orjson.loads(good)
    listing["responseObject"] = {"kind": "SecretList", "items": [{"metadata": {}}]}
    body = b"\n".join([b'{"kind": "Event", "broken', orjson.dumps(listing), good])
    decoded = decode("k8s-audit", body, None, {})
    assert [e.position for e in decoded.errors] == [0]
    assert len(decoded.events) == 1 and decoded.skipped == 1  # same auditID twice


def test_secret_never_in_redacted_event(data_dir):
    decoded = decode("k8s-audit", load(data_dir, "create_secret.json"), None, {})
    [event] = decoded.events
    raw = orjson.dumps(event)
    assert SECRET_B64.encode() in raw  # before redaction it is there ...
    redactor = Redactor(None, salt=b"0123456789abcdef-per-log-salt")
    redacted = redactor.apply(event)
    data = orjson.dumps(redacted)
    plain = base64.b64decode(SECRET_B64)
    assert SECRET_B64.encode() not in data  # ... and after, neither encoded
    assert plain not in data  # nor decoded
    digest = redactor.digest(SECRET_B64)
    assert redacted["original"]["requestObject"]["data"]["access-key"] == digest
    assert redacted["original"]["responseObject"]["data"]["access-key"] == digest
    assert validate_event(redacted) == redacted
    assert event["original"]["requestObject"]["data"]["access-key"] == SECRET_B64  # untouched
