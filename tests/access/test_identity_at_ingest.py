"""Identity through a real server: tokens verified against a real OIDC issuer at
ingest, aliases resolved to one principal, JWT-authenticated sources."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.oidc_issuer import OIDCIssuer
from support.server import Server


@pytest.fixture(scope="module")
def issuer() -> Iterator[OIDCIssuer]:
    idp = OIDCIssuer(audience="auditfed").start()
    yield idp
    idp.stop()


@pytest.fixture(scope="module")
def cluster() -> Iterator[OIDCIssuer]:
    """A Kubernetes cluster's service-account token issuer."""
    idp = OIDCIssuer("/k8s", audience="auditfed").start()
    yield idp
    idp.stop()


@pytest.fixture(scope="module")
def idserver(tmp_path_factory: pytest.TempPathFactory, issuer: OIDCIssuer,
             cluster: OIDCIssuer) -> Iterator[Server]:
    base = tmp_path_factory.mktemp("id")
    config = base / "auditfed.toml"
    config.write_text(f"""
{issuer.toml(principal_claim="email")}
{cluster.toml()}
{cluster.workload_toml()}
[directory.principals]
"alice@corp.example" = ["github:alice", "k8s:oidc:alice@corp.example", "pg:alice_rw",
                        "aws:arn:aws:iam::123456789012:user/alice"]
""")
    server = Server(base / "data", "--config", str(config)).start()
    yield server
    server.stop()


def post(server: Server, token: str, events: list[dict]) -> dict:
    with server.client(token) as http:
        r = http.post("/v1/events", json=events)
    assert r.status_code == 200, r.text
    return r.json()


def stored(server: Server, index: int) -> dict:
    with server.client(server.admin_token) as http:
        return http.get(f"/v1/events/{index}").json()["event"]


def test_a_valid_user_token_verifies_the_actor(idserver: Server, issuer: OIDCIssuer) -> None:
    token = issuer.mint({"sub": "u-123", "email": "alice@corp.example",
                         "act": {"sub": "ci-bot", "act": {"sub": "scheduler"}}})
    source = idserver.token("source", service="billing-api")
    body = post(idserver, source, [{"action": "db.query", "actor": {"id": "whoever", "token": token}}])
    event = stored(idserver, body["results"][0]["index"])
    actor = event["actor"]
    assert actor["verified"] is True and actor["principal"] == "alice@corp.example"
    assert actor["id"] == "u-123" and actor["issuer"] == issuer.issuer
    assert [link["id"] for link in actor["chain"]] == ["ci-bot", "scheduler"]
    assert "token" not in actor and actor["token_id"]
    assert token not in json.dumps(event)


@pytest.mark.parametrize(
    ("claims", "reason"),
    [({"exp": 1}, "expired"), ({"aud": "someone-else"}, "audience"),
     ({"iss": "https://evil.example"}, "untrusted_issuer")],
)
def test_a_bad_token_keeps_the_event_unverified(idserver: Server, issuer: OIDCIssuer, claims: dict,
                                                reason: str) -> None:
    token = issuer.mint({"email": "alice@corp.example", **claims})
    source = idserver.token("source", service="billing-api")
    body = post(idserver, source, [{"action": "db.query", "actor": {"id": "alice", "token": token}}])
    actor = stored(idserver, body["results"][0]["index"])["actor"]
    assert actor["verified"] is False and actor["verification_error"].startswith(reason)
    assert "token" not in actor


def test_aliases_resolve_to_one_principal(idserver: Server) -> None:
    kinds = {"github": ("github-audit", "alice"), "pg": ("pgaudit", "alice_rw"),
             "aws": ("cloudtrail", "arn:aws:iam::123456789012:user/alice")}
    for service, (kind, actor_id) in kinds.items():
        source = idserver.token("source", service=service)
        body = post(idserver, source, [{"action": "x.y", "actor": {"id": actor_id},
                                        "source": {"service": service, "kind": kind}}])
        assert stored(idserver, body["results"][0]["index"])["actor"]["principal"] == "alice@corp.example"


def test_a_workload_jwt_authenticates_a_source(idserver: Server, cluster: OIDCIssuer) -> None:
    issuer = cluster
    sa = issuer.mint({"sub": "system:serviceaccount:payments:api"}, alg="ES256")
    body = post(idserver, sa, [{"action": "payment.capture", "actor": {"id": "bob"}}])
    assert stored(idserver, body["results"][0]["index"])["source"]["service"] == "payments-api"
    with idserver.client(sa) as http:
        r = http.post("/v1/events", json={"action": "a.b", "actor": {"id": "bob"},
                                           "source": {"service": "ledger"}})
    assert r.status_code == 403
    stranger = issuer.mint({"sub": "system:serviceaccount:other:api"})
    with idserver.client(stranger) as http:
        assert http.post("/v1/events", json={"action": "a.b", "actor": {"id": "b"}}).status_code == 403
    with idserver.client(issuer.mint({"sub": "system:serviceaccount:payments:api"}, alg="none")) as http:
        r = http.post("/v1/events", json={"action": "a.b", "actor": {"id": "b"}})
    assert r.status_code == 401 and r.headers["content-type"] == "application/problem+json"


def test_config_errors_are_clear(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('[[issuers]]\nissuer = "x"\naudiences = []\n')
    server = Server(tmp_path / "data", "--config", str(config))
    with pytest.raises(RuntimeError, match="audiences"):
        server.start(timeout=20)
