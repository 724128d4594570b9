"""Fixtures: a real loopback OIDC issuer and verifiers wired to it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from support.oidc_issuer import FakeClock, OIDCIssuer

from auditfed.identity.jwks import JWKSCache
from auditfed.identity.oidc import IssuerConfig, TokenVerifier


@pytest.fixture
def idp() -> Iterator[OIDCIssuer]:
    with OIDCIssuer() as issuer:
        yield issuer


@pytest.fixture
def http_client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=2.0) as client:
        yield client


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make_verifier(idp: OIDCIssuer, http_client: httpx.Client, clock: FakeClock) -> Callable[..., TokenVerifier]:
    """Build a verifier trusting ``idp``; keyword args go to IssuerConfig, ``jwks_opts``
    to JWKSCache, ``verifier_opts`` to TokenVerifier."""

    def build(
        *,
        jwks_opts: dict[str, Any] | None = None,
        verifier_opts: dict[str, Any] | None = None,
        extra_issuers: list[IssuerConfig] | None = None,
        **issuer_fields: Any,
    ) -> TokenVerifier:
        fields: dict[str, Any] = {"issuer": idp.issuer, "audiences": ["auditfed"]}
        fields.update(issuer_fields)
        jwks = JWKSCache(http_client=http_client, clock=clock, **(jwks_opts or {}))
        return TokenVerifier([IssuerConfig(**fields), *(extra_issuers or [])], jwks=jwks, **(verifier_opts or {}))

    return build


@pytest.fixture
def verifier(make_verifier: Callable[..., TokenVerifier]) -> TokenVerifier:
    return make_verifier()
