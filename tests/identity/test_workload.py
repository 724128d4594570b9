"""Source and pipeline identity: Kubernetes SA tokens, SPIFFE JWT-SVIDs, GitHub Actions."""

from __future__ import annotations

import httpx
import pytest
from support.oidc_issuer import OIDCIssuer

from auditfed.errors import ConfigError, Forbidden
from auditfed.identity.directory import Directory
from auditfed.identity.oidc import IssuerConfig, TokenInvalid, TokenVerifier
from auditfed.identity.workload import (
    GITHUB_ACTIONS_ISSUER,
    WorkloadAuthenticator,
    WorkloadNotMapped,
)

K8S_ISSUER_PATH = "/k8s"


@pytest.fixture
def k8s() -> OIDCIssuer:
    with OIDCIssuer(K8S_ISSUER_PATH, audience="auditfed-ingest") as issuer:
        yield issuer


@pytest.fixture
def github_keys() -> OIDCIssuer:
    """Serves the keys for tokens whose `iss` is the real GitHub Actions issuer string."""
    with OIDCIssuer(audience="https://github.com/corp") as issuer:
        yield issuer


@pytest.fixture
def directory() -> Directory:
    return Directory({"alice@corp.example": ["github:alice"], "bob@corp.example": ["github:bob"]})


@pytest.fixture
def auth(k8s: OIDCIssuer, github_keys: OIDCIssuer, directory: Directory, http_client: httpx.Client):
    verifier = TokenVerifier(
        [
            IssuerConfig(issuer=k8s.issuer, audiences=["auditfed-ingest"], algorithms=["RS256", "ES256"]),
            IssuerConfig(
                issuer=GITHUB_ACTIONS_ISSUER,
                jwks_uri=github_keys.jwks_uri,
                discovery=False,
                audiences=["https://github.com/corp"],
                algorithms=["RS256"],
            ),
        ],
        http_client=http_client,
    )
    mappings = [
        {
            "issuer": k8s.issuer,
            "subject": "system:serviceaccount:payments:api",
            "service": "payments-api",
            "environment": "prod-eu",
        },
        {
            "issuer": k8s.issuer,
            "subject": "spiffe://prod.corp.example/ns/{ns}/sa/{sa}",
            "service": "{ns}-{sa}",
            "environment": "prod",
        },
        {
            "issuer": k8s.issuer,
            "subject": "system:serviceaccount:{namespace}:{name}",
            "claims": {"env": "staging"},
            "service": "{namespace}-{name}",
            "environment": "{env}",
        },
        {
            "issuer": GITHUB_ACTIONS_ISSUER,
            "subject": "repo:corp/{repo}:**",
            "service": "{repo}",
            "environment": "ci",
        },
    ]
    return WorkloadAuthenticator(verifier, mappings, directory)


def github_claims(**overrides: object) -> dict:
    claims = {
        "iss": GITHUB_ACTIONS_ISSUER,
        "aud": "https://github.com/corp",
        "sub": "repo:corp/deployer:ref:refs/heads/main",
        "repository": "corp/deployer",
        "repository_owner": "corp",
        "ref": "refs/heads/main",
        "sha": "a" * 40,
        "workflow": "deploy",
        "run_id": "123456",
        "event_name": "push",
        "actor": "alice",
        "actor_id": "1001",
    }
    claims.update(overrides)
    return claims


def test_k8s_service_account_token(auth: WorkloadAuthenticator, k8s: OIDCIssuer) -> None:
    token = k8s.mint(
        {
            "sub": "system:serviceaccount:payments:api",
            "kubernetes.io": {"namespace": "payments", "serviceaccount": {"name": "api", "uid": "u-1"}},
        }
    )
    ident = auth.authenticate(token)
    assert (ident.service, ident.environment, ident.pipeline) == ("payments-api", "prod-eu", None)
    assert ident.subject == "system:serviceaccount:payments:api"
    assert ident.chain == ()
    assert ident.actor_fields()["type"] == "service"


def test_k8s_template_mapping_with_claim_condition(auth: WorkloadAuthenticator, k8s: OIDCIssuer) -> None:
    ident = auth.authenticate(k8s.mint({"sub": "system:serviceaccount:billing:worker", "env": "staging"}, alg="ES256"))
    assert (ident.service, ident.environment) == ("billing-worker", "staging")
    with pytest.raises(WorkloadNotMapped) as info:
        auth.authenticate(k8s.mint({"sub": "system:serviceaccount:billing:worker"}))
    assert isinstance(info.value, Forbidden) and info.value.status == 403


def test_spiffe_jwt_svid(auth: WorkloadAuthenticator, k8s: OIDCIssuer) -> None:
    ident = auth.authenticate(k8s.mint({"sub": "spiffe://prod.corp.example/ns/orders/sa/writer"}))
    assert (ident.service, ident.environment) == ("orders-writer", "prod")
    with pytest.raises(WorkloadNotMapped):
        auth.authenticate(k8s.mint({"sub": "spiffe://evil.example/ns/orders/sa/writer"}))


def test_github_actions_pipeline_identity(auth: WorkloadAuthenticator, github_keys: OIDCIssuer) -> None:
    ident = auth.authenticate(github_keys.mint(github_claims()))
    assert ident.pipeline == "repo:corp/deployer:ref:refs/heads/main"
    assert ident.principal == ident.pipeline
    assert (ident.service, ident.environment) == ("deployer", "ci")
    assert [(c.id, c.type, c.principal) for c in ident.chain] == [("alice", "user", "alice@corp.example")]
    assert ident.attributes["sha"] == "a" * 40
    assert ident.actor_fields() == {
        "id": "repo:corp/deployer:ref:refs/heads/main",
        "type": "pipeline",
        "issuer": GITHUB_ACTIONS_ISSUER,
        "principal": "repo:corp/deployer:ref:refs/heads/main",
        "verified": True,
        "chain": [{"id": "alice", "type": "user", "issuer": "https://github.com", "principal": "alice@corp.example"}],
    }


def test_github_actions_unknown_actor_kept_unresolved(auth: WorkloadAuthenticator, github_keys: OIDCIssuer) -> None:
    ident = auth.authenticate(github_keys.mint(github_claims(actor="stranger")))
    assert ident.chain[0].id == "stranger" and ident.chain[0].principal is None


def test_github_actions_other_org_rejected(auth: WorkloadAuthenticator, github_keys: OIDCIssuer) -> None:
    token = github_keys.mint(github_claims(sub="repo:evil/deployer:ref:refs/heads/main", repository_owner="evil"))
    with pytest.raises(WorkloadNotMapped):
        auth.authenticate(token)


def test_github_actions_wrong_audience(auth: WorkloadAuthenticator, github_keys: OIDCIssuer) -> None:
    with pytest.raises(TokenInvalid) as info:
        auth.authenticate(github_keys.mint(github_claims(aud="https://github.com/evil")))
    assert info.value.reason == "audience"


def test_invalid_workload_token(auth: WorkloadAuthenticator, k8s: OIDCIssuer) -> None:
    with pytest.raises(TokenInvalid) as info:
        auth.authenticate(k8s.mint({"sub": "system:serviceaccount:payments:api", "aud": "other"}))
    assert info.value.status == 401


def test_github_mapping_must_pin_owner(auth: WorkloadAuthenticator) -> None:
    verifier = auth._verifier
    for subject in ("**", "repo:*/app:**", "repo:{org}/app:**"):
        with pytest.raises(ConfigError):
            WorkloadAuthenticator(verifier, [{"issuer": GITHUB_ACTIONS_ISSUER, "subject": subject, "service": "x"}])
    WorkloadAuthenticator(
        verifier,
        [{"issuer": GITHUB_ACTIONS_ISSUER, "subject": "**", "claims": {"repository_owner_id": "42"}, "service": "x"}],
    )


def test_mapping_for_untrusted_issuer_rejected(auth: WorkloadAuthenticator) -> None:
    with pytest.raises(ConfigError):
        WorkloadAuthenticator(auth._verifier, [{"issuer": "https://nope.example", "service": "x"}])


def test_delegated_workload_chain(auth: WorkloadAuthenticator, k8s: OIDCIssuer) -> None:
    token = k8s.mint({"sub": "system:serviceaccount:payments:api", "act": {"sub": "system:serviceaccount:ops:runner"}})
    assert [c.id for c in auth.authenticate(token).chain] == ["system:serviceaccount:ops:runner"]


def test_async_authenticate(auth: WorkloadAuthenticator, k8s: OIDCIssuer) -> None:
    import asyncio

    token = k8s.mint({"sub": "system:serviceaccount:payments:api"})
    assert asyncio.run(auth.aauthenticate(token)).service == "payments-api"
