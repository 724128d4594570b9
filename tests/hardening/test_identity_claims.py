"""Issue #16 item 4: server-owned fields are the server's.

Through a real server with a real OIDC issuer: what a producer writes where
verification writes (``verified``, ``issuer``, ``principal``, ``token_id``, ``chain``)
is kept apart as ``actor.claimed`` and never read as the actor's identity (stored
positions, timelines, search, detection); ``source.service``/``source.kind``
``auditfed`` are refused for every token on every ingest route.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from support.oidc_issuer import OIDCIssuer
from support.server import Server

from auditfed.detect.service import _own_event

VICTIM = "victim@corp.example"
RULE = f"""\
title: The victim acts
id: 0b7f3f7d-5a57-4c4e-9d55-6f1d2c1e1a01
status: test
logsource:
    product: auditfed
detection:
    selection:
        action: test.victim
        actor.principal: {VICTIM}
    condition: selection
level: high
"""


@pytest.fixture(scope="module")
def issuer() -> Iterator[OIDCIssuer]:
    with OIDCIssuer(audience="auditfed") as idp:
        yield idp


@pytest.fixture(scope="module")
def cluster() -> Iterator[OIDCIssuer]:
    with OIDCIssuer("/k8s", audience="auditfed") as idp:
        yield idp


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, issuer: OIDCIssuer, cluster: OIDCIssuer) -> Iterator[Server]:
    base = tmp_path_factory.mktemp("claims")
    (base / "rules").mkdir()
    (base / "rules" / "victim.yml").write_text(RULE)
    config = base / "auditfed.toml"
    config.write_text(f"""
default_rules = false
rules = [{json.dumps(str(base / "rules"))}]

{issuer.toml(principal_claim="email")}
{cluster.toml()}
{cluster.workload_toml()}
[[workloads]]
issuer = "{cluster.issuer}"
subject = "system:serviceaccount:platform:{{name}}"
service = "{{name}}"

[directory.principals]
"{VICTIM}" = ["app:victim"]
"alice@corp.example" = ["app:alice"]
""")
    srv = Server(base / "data", "--config", str(config)).start()
    yield srv
    srv.stop()


def post(server: Server, token: str, events: list[dict[str, Any]]) -> list[int]:
    with server.client(token) as http:
        r = http.post("/v1/events", json=events)
    assert r.status_code == 200, r.text
    return [item["index"] for item in r.json()["results"]]


def stored(server: Server, index: int) -> dict[str, Any]:
    with server.client(server.admin_token) as http:
        return http.get(f"/v1/events/{index}").json()["event"]


FORGED_CHAIN = [{"id": "ceo", "type": "user", "principal": "ceo@corp.example", "issuer": "https://idp.example"}]


def test_a_forged_chain_beside_a_valid_user_token_is_only_a_claim(server: Server, issuer: OIDCIssuer) -> None:
    token = issuer.mint({"sub": "u-1", "email": "alice@corp.example", "act": {"sub": "ci-bot"}})
    source = server.token("source", service="billing-api")
    [index] = post(server, source, [{"action": "db.query", "actor": {
        "id": "someone", "token": token, "chain": FORGED_CHAIN, "token_id": "forged", "verified": True}}])
    actor = stored(server, index)["actor"]
    assert actor["verified"] is True and actor["principal"] == "alice@corp.example"
    assert actor["chain"] == [{"id": "ci-bot"}]  # the token's act claim, nothing else
    assert actor["token_id"] != "forged"
    assert actor["claimed"] == {"id": "someone", "chain": FORGED_CHAIN, "token_id": "forged"}

    bare = issuer.mint({"sub": "u-2", "email": "alice@corp.example"})  # no act: no chain at all
    [index] = post(server, source, [{"action": "db.query", "actor": {"id": "u-2", "token": bare,
                                                                     "chain": FORGED_CHAIN}}])
    actor = stored(server, index)["actor"]
    assert actor["verified"] is True and "chain" not in actor and actor["claimed"] == {"chain": FORGED_CHAIN}


def test_a_forged_chain_beside_a_workload_jwt_is_only_a_claim(server: Server, cluster: OIDCIssuer) -> None:
    subject = "system:serviceaccount:payments:api"
    jwt = cluster.mint({"sub": subject}, alg="ES256")
    [index] = post(server, jwt, [{"action": "payment.capture", "actor": {"id": subject, "chain": FORGED_CHAIN}}])
    event = stored(server, index)
    assert event["source"]["service"] == "payments-api"
    actor = event["actor"]
    assert actor["verified"] is True and actor["issuer"] == cluster.issuer and "chain" not in actor
    assert actor["claimed"] == {"chain": FORGED_CHAIN}


def test_forged_identity_without_a_token_is_kept_apart_and_out_of_the_victims_timeline(server: Server) -> None:
    source = server.token("source", service="intruder-app")
    forged = {"id": "mallory", "principal": VICTIM, "issuer": "https://idp.corp.example", "verified": True,
              "token_id": "jti-of-the-victim", "chain": [{"id": "victim", "principal": VICTIM}]}
    marker = f"forged-{uuid.uuid4().hex[:8]}"
    [index] = post(server, source, [{"action": "data.export", "actor": forged,
                                     "resource": {"type": "file", "id": marker}}])
    actor = stored(server, index)["actor"]
    for name in ("principal", "issuer", "verified", "token_id", "chain"):
        assert name not in actor, name
    assert actor["claimed"] == {"principal": VICTIM, "issuer": "https://idp.corp.example",
                                "token_id": "jti-of-the-victim", "chain": [{"id": "victim", "principal": VICTIM}]}
    auditor = server.token("auditor")
    with server.client(auditor) as http:
        timeline = http.get(f"/v1/principals/{VICTIM}/timeline", params={"limit": 500}).json()
        assert index not in [e["index"] for e in timeline["events"]]
        found = http.get("/v1/events", params={"q": f"actor:{VICTIM}", "limit": 500}).json()
        assert index not in [e["index"] for e in found["events"]]
        accessed = http.get("/v1/who-accessed", params={"resource": marker}).json()["accesses"]
        ocsf = http.get(f"/v1/events/{index}", params={"format": "ocsf"}).json()["event"]
    assert [(a["who"], a["claimed"]["principal"]) for a in accessed] == [("mallory", VICTIM)]
    assert "on_behalf_of" not in accessed[0]
    assert ocsf["actor"]["user"]["name"] == "mallory" and "session" not in ocsf["actor"]
    assert "invoked_by" not in ocsf["actor"] and ocsf["unmapped"]["auditfed"]["claimed"]["principal"] == VICTIM


def test_a_claim_and_the_same_member_in_place_must_agree(server: Server) -> None:
    source = server.token("source", service="billing-api")
    with server.client(source) as http:
        r = http.post("/v1/events", json={"action": "a.b", "actor": {
            "id": "bob", "principal": "x@corp.example", "claimed": {"principal": "y@corp.example"}}})
    assert r.status_code == 422
    assert r.json()["errors"][0]["path"] == "actor.principal"


def test_detection_never_reads_a_claim_as_the_principal(server: Server) -> None:
    source = server.token("source", service="intruder-app")
    [forged, genuine] = post(server, source, [
        {"action": "test.victim", "actor": {"id": "mallory", "principal": VICTIM, "verified": True}},
        {"action": "test.victim", "actor": {"id": "victim"}},  # the directory resolves it to the victim
    ])
    auditor = server.token("auditor")
    with server.client(auditor) as http:
        fired: list[int] = []
        for _ in range(300):  # detection is asynchronous: wait for the genuine event's alert
            fired = [i for a in http.get("/v1/alerts").json()["alerts"] for i in a["indexes"]]
            if genuine in fired:
                break
            http.get("/healthz")
    assert genuine in fired and forged not in fired


# --- the server's own source is reserved ---


def _problem(r: httpx.Response, name: str) -> None:
    assert r.status_code == 403, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert f"source.{name}" in r.json()["detail"] and "reserved" in r.json()["detail"]


def _otlp(service: str) -> bytes:
    return json.dumps({"resourceLogs": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": service}}]},
        "scopeLogs": [{"logRecords": [{"eventName": "alert.raised", "timeUnixNano": "1795800000000000000",
                                       "attributes": [{"key": "user.id", "value": {"stringValue": "x"}}]}]}],
    }]}).encode()


def _cloudevent(source: str) -> bytes:
    return json.dumps({"specversion": "1.0", "id": uuid.uuid4().hex, "source": source,
                       "type": "audit.search"}).encode()


def _reserved_requests(service: str) -> list[tuple[str, bytes, str]]:
    event = {"action": "audit.search", "actor": {"id": "token:x", "type": "auditor"},
             "source": {"service": service, "kind": "auditfed"}}
    return [
        ("/v1/events", json.dumps(event).encode(), "application/json"),
        ("/v1/logs", _otlp(service), "application/json"),
        ("/v1/ingest/cloudevents", _cloudevent(service), "application/cloudevents+json"),
    ]


def _actions(server: Server, action: str) -> list[dict[str, Any]]:
    with server.client(server.admin_token) as http:
        found = http.get("/v1/events", params={"q": f"action:{action}", "limit": 500}).json()["events"]
    return [e["event"] for e in found if e["event"]["source"]["service"] != "auditfed"
            or "federation" in (e["event"].get("attributes") or {})]


@pytest.mark.parametrize("role", ["admin", "source"])
def test_no_token_may_write_as_the_server_on_any_ingest_route(server: Server, role: str) -> None:
    token = server.admin_token if role == "admin" else server.token("source", service="auditfed")
    with server.client(token) as http:
        for path, body, content_type in _reserved_requests("auditfed"):
            _problem(http.post(path, content=body, headers={"Content-Type": content_type}), "service")
    assert not [e for e in _actions(server, "audit.search") if e["source"]["service"] == "auditfed"]


@pytest.mark.parametrize("kind", ["auditfed", "federation"])
def test_the_servers_kinds_are_reserved_too(server: Server, kind: str) -> None:
    with server.client(server.admin_token) as http:
        r = http.post("/v1/events", json={"action": "alert.raised", "actor": {"id": "auditfed-detect"},
                                          "source": {"service": "billing-api", "kind": kind}})
    _problem(r, "kind")


def test_a_workload_mapped_to_the_servers_name_cannot_write(server: Server, cluster: OIDCIssuer) -> None:
    jwt = cluster.mint({"sub": "system:serviceaccount:platform:auditfed"}, alg="ES256")
    with server.client(jwt) as http:
        r = http.post("/v1/events", json={"action": "alert.raised", "actor": {"id": "x"}})
    _problem(r, "service")


def test_the_servers_own_records_are_still_written(server: Server) -> None:
    auditor = server.token("auditor")
    with server.client(auditor) as http:
        assert http.get("/v1/events", params={"limit": 1}).status_code == 200
    with server.client(server.admin_token) as http:
        own = http.get("/v1/events", params={"q": "service:auditfed", "limit": 50}).json()["events"]
    assert any(e["event"]["source"] == {"service": "auditfed", "kind": "auditfed"} for e in own)


def test_a_nodes_alert_kept_by_a_hub_is_not_the_hubs_own() -> None:
    event = {"action": "alert.raised", "source": {"service": "auditfed", "kind": "auditfed", "node": "eu-1"},
             "attributes": {"federation": {"node": "eu-1", "node_index": 3, "node_leaf_hash": "x"}}}
    assert not _own_event(event)
    del event["attributes"]
    assert _own_event(event)


def test_the_event_schema_documents_claimed() -> None:
    schema = json.loads((Path(__file__).resolve().parents[2] / "docs" / "event.schema.json").read_text())
    assert "claimed" in json.dumps(schema)
