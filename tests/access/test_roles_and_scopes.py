"""Every role and scope against every endpoint, and auditors audited."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from support.server import Server

READ_ENDPOINTS = [
    ("GET", "/v1/events?q=action:x.y"),
    ("GET", "/v1/events/0"),
    ("GET", "/v1/log/entries?start=0&end=1"),
    ("GET", "/v1/log/proof/inclusion?index=0"),
    ("GET", "/v1/log/proof/consistency?old=1&new=2"),
]
ADMIN_ENDPOINTS = [("GET", "/v1/tokens"), ("POST", "/v1/tokens")]
PUBLIC = ["/v1/log/checkpoint", "/v1/log/key", "/healthz", "/metrics", "/v1/schema/event", "/openapi.json"]


@pytest.fixture(scope="module")
def tokens(server: Server) -> Iterator[dict[str, str]]:
    tokens = {
        "admin": server.admin_token,
        "auditor": server.token("auditor"),
        "eu-auditor": server.token("auditor", environment="prod-eu"),
        "billing-auditor": server.token("auditor", service="billing-api"),
        "source": server.token("source", service="billing-api", environment="prod-eu"),
        "us-source": server.token("source", service="web", environment="prod-us"),
    }
    for name in ("source", "us-source"):
        with server.client(tokens[name]) as http:
            events = [{"id": str(uuid.uuid4()), "action": "x.y", "actor": {"id": name}} for _ in range(3)]
            assert http.post("/v1/events", json=events).status_code == 200
    yield tokens


def call(server: Server, token: str | None, method: str, path: str):
    with server.client(token) as http:
        body = {"role": "auditor"} if method == "POST" else None
        return http.request(method, path, json=body)


@pytest.mark.parametrize(("method", "path"), READ_ENDPOINTS)
def test_reads_need_an_auditor_or_admin(server: Server, tokens: dict, method: str, path: str) -> None:
    assert call(server, tokens["admin"], method, path).status_code == 200
    assert call(server, tokens["auditor"], method, path).status_code == 200
    assert call(server, tokens["source"], method, path).status_code == 403
    assert call(server, None, method, path).status_code == 401


@pytest.mark.parametrize(("method", "path"), ADMIN_ENDPOINTS)
def test_token_management_needs_an_admin(server: Server, tokens: dict, method: str, path: str) -> None:
    assert call(server, tokens["admin"], method, path).status_code in (200, 201)
    for role in ("auditor", "source"):
        assert call(server, tokens[role], method, path).status_code == 403


@pytest.mark.parametrize("path", PUBLIC)
def test_public_endpoints(server: Server, path: str) -> None:
    assert call(server, None, "GET", path).status_code == 200


def test_writes_need_a_source_or_admin(server: Server, tokens: dict) -> None:
    event = {"action": "a.b", "actor": {"id": "z"}, "source": {"service": "s"}}
    with server.client(tokens["auditor"]) as http:
        assert http.post("/v1/events", json=event).status_code == 403


@pytest.mark.parametrize("name", ["eu-auditor", "billing-auditor"])
def test_a_scoped_auditor_sees_only_its_scope(server: Server, tokens: dict, name: str) -> None:
    with server.client(tokens[name]) as http:
        events = http.get("/v1/events", params={"limit": 1000}).json()["events"]
        assert events and all(e["event"]["source"]["service"] == "billing-api" for e in events)
        outside = [e["index"] for e in call(server, tokens["admin"], "GET", "/v1/events?q=service:web")
                   .json()["events"]]
        assert outside
        for index in outside:
            assert http.get(f"/v1/events/{index}").status_code == 404
            assert http.get("/v1/log/proof/inclusion", params={"index": index}).status_code == 404
        assert http.get("/v1/events", params={"q": "service:web"}).json()["events"] == []
        assert http.get("/v1/log/entries", params={"start": 0, "end": 5}).status_code == 403
        inside = events[0]["index"]
        assert http.get(f"/v1/events/{inside}").status_code == 200
        assert http.get("/v1/log/proof/inclusion", params={"index": inside}).status_code == 200


def test_reads_and_admin_changes_are_logged(server: Server, tokens: dict) -> None:
    auditor_id = next(r["token_id"] for r in call(server, tokens["admin"], "GET", "/v1/tokens").json()["tokens"]
                      if r["role"] == "auditor" and not r["service"] and not r["environment"])
    with server.client(tokens["auditor"]) as http:
        http.get("/v1/events", params={"q": "action:secret.thing"})
        http.get("/v1/log/proof/inclusion", params={"index": 0})
    created = call(server, tokens["admin"], "POST", "/v1/tokens").json()["token_id"]
    with server.client(tokens["admin"]) as http:
        trail = http.get("/v1/events", params={"q": "service:auditfed", "limit": 1000}).json()["events"]
    by_actor = [e["event"] for e in trail if e["event"]["actor"]["id"] == f"token:{auditor_id}"]
    actions = {e["action"] for e in by_actor}
    assert {"audit.search", "audit.proof.inclusion"} <= actions
    search = next(e for e in by_actor if e["action"] == "audit.search")
    assert "secret.thing" in search["attributes"]["query"]
    assert any(e["event"]["action"] == "admin.token.create" and e["event"]["attributes"]["token_id"] == created
               for e in trail)
