"""Token verification against a real loopback OIDC issuer (RFC 7519 / RFC 8725)."""

from __future__ import annotations

import asyncio
import time

import pytest
from support.oidc_issuer import FakeClock, OIDCIssuer, b64url, generate_key

from auditfed.errors import ConfigError, Unauthenticated
from auditfed.identity.jwks import JWKSCache
from auditfed.identity.oidc import IssuerConfig, KeysUnavailable, TokenInvalid, TokenVerifier


def reason_of(verifier: TokenVerifier, token: str) -> str:
    with pytest.raises(TokenInvalid) as info:
        verifier.verify(token)
    exc = info.value
    # errors say why, never echo the token, its signature or key material
    for part in token.split("."):
        if len(part) > 8:
            assert part not in str(exc)
            assert part not in repr(exc.extensions)
    assert exc.extensions["reason"] == exc.reason
    return exc.reason


# -- valid tokens ---------------------------------------------------------------------


@pytest.mark.parametrize(("alg", "kty"), [("RS256", "RSA"), ("ES256", "EC"), ("EdDSA", "OKP"), ("Ed25519", "OKP")])
def test_valid_token_each_key_type(idp: OIDCIssuer, verifier: TokenVerifier, alg: str, kty: str) -> None:
    token = idp.mint({"sub": "alice", "jti": "tok-1"}, alg=alg, kty=kty)
    v = verifier.verify(token)
    assert v.issuer == idp.issuer
    assert v.subject == "alice"
    assert v.principal == "alice"
    assert v.audience == ("auditfed",)
    assert v.algorithm == alg
    assert v.key_id == idp.signing[kty].kid
    assert v.token_id == "tok-1"
    assert v.chain == ()
    assert v.claims["sub"] == "alice"
    assert token not in repr(v)
    assert v.actor_fields() == {
        "id": "alice", "issuer": idp.issuer, "principal": "alice", "verified": True
    }  # fmt: skip


def test_discovery_is_used_without_jwks_uri(idp: OIDCIssuer, verifier: TokenVerifier) -> None:
    verifier.verify(idp.mint())
    assert idp.discovery_fetches == 1
    assert idp.jwks_fetches == 1


def test_explicit_jwks_uri_skips_discovery(idp: OIDCIssuer, make_verifier) -> None:
    v = make_verifier(jwks_uri=idp.jwks_uri, discovery=False)
    v.verify(idp.mint())
    assert idp.discovery_fetches == 0
    assert idp.jwks_fetches == 1


def test_token_id_is_digest_without_jti(idp: OIDCIssuer, verifier: TokenVerifier) -> None:
    import hashlib

    token = idp.mint({"jti": None})
    v = verifier.verify(token)
    assert v.token_id == "sha256:" + hashlib.sha256(token.encode()).hexdigest()


def test_token_without_kid_uses_matching_key(idp: OIDCIssuer, verifier: TokenVerifier) -> None:
    assert verifier.verify(idp.mint(alg="ES256", kid=False)).algorithm == "ES256"


def test_audience_list_intersects(idp: OIDCIssuer, make_verifier) -> None:
    v = make_verifier(audiences=["auditfed", "other"])
    assert v.verify(idp.mint({"aud": ["unrelated", "other"]})).audience == ("unrelated", "other")


def test_principal_from_email_claim(idp: OIDCIssuer, make_verifier) -> None:
    v = make_verifier(principal_claim="email")
    token = idp.mint({"sub": "00u1abc", "email": "alice@corp.example", "email_verified": True})
    got = v.verify(token)
    assert (got.subject, got.principal) == ("00u1abc", "alice@corp.example")
    assert reason_of(v, idp.mint({"sub": "x", "email": "a@corp.example", "email_verified": False})) == (
        "principal_unverified"
    )
    assert reason_of(v, idp.mint({"sub": "x"})) == "principal_missing"


# -- time ----------------------------------------------------------------------------


def test_expired(idp: OIDCIssuer, verifier: TokenVerifier) -> None:
    now = int(time.time())
    assert reason_of(verifier, idp.mint({"iat": now - 600, "nbf": now - 600, "exp": now - 120})) == "expired"


def test_expired_within_leeway_is_accepted(idp: OIDCIssuer, verifier: TokenVerifier) -> None:
    now = int(time.time())
    verifier.verify(idp.mint({"iat": now - 600, "nbf": now - 600, "exp": now - 30}))


def test_missing_exp_rejected(idp: OIDCIssuer, verifier: TokenVerifier) -> None:
    assert reason_of(verifier, idp.mint({"exp": None})) == "missing_claim"


def test_not_yet_valid(idp: OIDCIssuer, verifier: TokenVerifier) -> None:
    now = int(time.time())
    assert reason_of(verifier, idp.mint({"nbf": now + 600, "exp": now + 900})) == "not_yet_valid"
    verifier.verify(idp.mint({"nbf": now + 30}))  # within leeway


def test_issued_in_future(idp: OIDCIssuer, verifier: TokenVerifier) -> None:
    now = int(time.time())
    assert reason_of(verifier, idp.mint({"iat": now + 600, "nbf": None})) == "issued_in_future"


# -- audience / issuer ------------------------------------------------------------------


def test_wrong_audience(idp: OIDCIssuer, verifier: TokenVerifier) -> None:
    assert reason_of(verifier, idp.mint({"aud": "someone-else"})) == "audience"
    assert reason_of(verifier, idp.mint({"aud": []})) == "audience"
    assert reason_of(verifier, idp.mint({"aud": None})) == "missing_claim"


def one_char_variants(iss: str) -> list[str]:
    return [
        iss + "/",  # trailing slash
        iss[:-1],  # one character shorter
        iss[:-1] + chr(ord(iss[-1]) ^ 1),  # last character changed
        iss.replace("http://", "https://"),
        iss.upper(),
    ]


def test_issuer_must_match_exactly(idp: OIDCIssuer, verifier: TokenVerifier) -> None:
    for variant in one_char_variants(idp.issuer):
        # correctly signed by the trusted issuer's key, but with another `iss`
        assert reason_of(verifier, idp.mint({"iss": variant})) == "untrusted_issuer", variant
    assert reason_of(verifier, idp.mint({"iss": None})) == "untrusted_issuer"


def test_configured_trailing_slash_issuer_rejects_bare_one(idp: OIDCIssuer, http_client) -> None:
    v = TokenVerifier(
        [IssuerConfig(issuer=idp.issuer + "/", jwks_uri=idp.jwks_uri, audiences=["auditfed"])],
        http_client=http_client,
    )
    assert v.verify(idp.mint({"iss": idp.issuer + "/"})).issuer == idp.issuer + "/"
    assert reason_of(v, idp.mint()) == "untrusted_issuer"


# -- algorithm and header attacks -------------------------------------------------------


def test_alg_none_rejected(idp: OIDCIssuer, verifier: TokenVerifier) -> None:
    for alg in ("none", "None", "NONE"):
        token = idp.sign_raw({"alg": alg, "typ": "JWT"}, idp.claims(), None)
        assert reason_of(verifier, token) == "alg_none"
    # with a (meaningless) signature appended as well
    token = idp.sign_raw({"alg": "none"}, idp.claims(), None) + "c2ln"
    assert reason_of(verifier, token) == "alg_none"


def test_hs256_signed_with_rsa_public_key_rejected(idp: OIDCIssuer, verifier: TokenVerifier) -> None:
    """Algorithm confusion: the attacker HMACs with the (public) RSA key as secret."""
    verifier.verify(idp.mint())  # keys are cached
    rsa_kid = idp.signing["RSA"].kid
    header = {"alg": "HS256", "typ": "JWT", "kid": rsa_kid}
    for secret in (idp.rsa_public_pem(), idp.rsa_public_pem().strip()):
        assert reason_of(verifier, idp.sign_raw(header, idp.claims(), secret)) == "alg_not_allowed"


def test_alg_must_match_key_type(idp: OIDCIssuer, verifier: TokenVerifier) -> None:
    # an ES256 signature presented under the RSA key's kid
    ec = idp.signing["EC"]
    token = idp.sign_raw({"alg": "ES256", "kid": idp.signing["RSA"].kid}, idp.claims(), ec)
    assert reason_of(verifier, token) == "key_mismatch"


def test_alg_outside_issuer_allowlist(idp: OIDCIssuer, make_verifier) -> None:
    v = make_verifier(algorithms=["ES256"])
    assert reason_of(v, idp.mint(alg="RS256")) == "alg_not_allowed"
    v.verify(idp.mint(alg="ES256"))


def test_ps256_with_rsa_key_when_allowed(idp: OIDCIssuer, make_verifier) -> None:
    v = make_verifier(algorithms=["PS256"])
    assert v.verify(idp.mint(alg="PS256", kty="RSA")).algorithm == "PS256"


@pytest.mark.parametrize("config_alg", ["none", "HS256", "HS512", "XX999"])
def test_config_rejects_unsafe_algorithms(idp: OIDCIssuer, config_alg: str) -> None:
    with pytest.raises(ValueError):
        IssuerConfig(issuer=idp.issuer, audiences=["a"], algorithms=[config_alg])


def test_config_requires_https_off_loopback() -> None:
    with pytest.raises(ValueError):
        IssuerConfig(issuer="http://idp.corp.example", audiences=["a"])
    IssuerConfig(issuer="https://idp.corp.example", audiences=["a"])
    with pytest.raises(ConfigError):
        TokenVerifier(
            [
                IssuerConfig(issuer="https://idp.corp.example", audiences=["a"]),
                IssuerConfig(issuer="https://idp.corp.example", audiences=["b"]),
            ]
        )


def test_embedded_jwk_header_rejected(idp: OIDCIssuer, verifier: TokenVerifier) -> None:
    """The attacker signs with its own key and embeds the public half."""
    attacker = generate_key("RSA", "attacker")
    header = {"alg": "RS256", "kid": "attacker", "jwk": attacker.as_dict(private=False)}
    assert reason_of(verifier, idp.sign_raw(header, idp.claims(), attacker)) == "forbidden_header"
    # even with the issuer's own kid, a jwk header is refused
    header = {"alg": "RS256", "kid": idp.signing["RSA"].kid, "jwk": attacker.as_dict(private=False)}
    assert reason_of(verifier, idp.sign_raw(header, idp.claims(), attacker)) == "forbidden_header"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("jku", "https://attacker.example/jwks"),
        ("x5u", "https://attacker.example/cert.pem"),
        ("x5c", ["MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA"]),
    ],
)
def test_key_url_headers_rejected(idp: OIDCIssuer, verifier: TokenVerifier, name: str, value: object) -> None:
    assert reason_of(verifier, idp.mint(headers={name: value})) == "forbidden_header"


def test_unknown_crit_rejected(idp: OIDCIssuer, verifier: TokenVerifier) -> None:
    token = idp.mint(headers={"crit": ["exp-ext"], "exp-ext": 1})
    assert reason_of(verifier, token) == "crit_unsupported"
    assert reason_of(verifier, idp.mint(headers={"crit": ["b64"], "b64": False})) == "crit_unsupported"
    assert reason_of(verifier, idp.mint(headers={"b64": True})) == "forbidden_header"


def test_bad_signature(idp: OIDCIssuer, verifier: TokenVerifier) -> None:
    token = idp.mint({"sub": "alice"})
    h, _, s = token.split(".")
    forged = f"{h}.{b64url(b'{}')}.{s}"
    forged_claims = idp.mint({"sub": "mallory"}).split(".")[1]
    assert reason_of(verifier, f"{h}.{forged_claims}.{s}") == "bad_signature"
    assert reason_of(verifier, forged) in {"bad_signature", "untrusted_issuer"}
    assert reason_of(verifier, f"{h}.{token.split('.')[1]}.") == "bad_signature"
    # a key of the same type, not the issuer's
    other = generate_key("EC", idp.signing["EC"].kid)
    assert reason_of(verifier, idp.mint(alg="ES256", key=other)) == "bad_signature"


@pytest.mark.parametrize(
    "token",
    ["", "abc", "a.b", "a.b.c.d", "!!.??.##", "eyJhbGciOiJSUzI1NiJ9.bm90IGpzb24.c2ln", "é.é.é"],
)
def test_malformed(verifier: TokenVerifier, token: str) -> None:
    with pytest.raises(TokenInvalid) as info:
        verifier.verify(token)
    assert info.value.reason == "malformed"
    assert isinstance(info.value, Unauthenticated) and info.value.status == 401


def test_jwe_rejected(verifier: TokenVerifier) -> None:
    assert reason_of(verifier, "eyJhbGciOiJSU0EtT0FFUCJ9.a.b.c.d") == "encrypted"


def test_oversized_token(verifier: TokenVerifier) -> None:
    assert reason_of(verifier, "a" * 20_000) == "too_large"


def test_token_type_enforced_when_configured(idp: OIDCIssuer, make_verifier) -> None:
    v = make_verifier(token_types=["at+jwt"])
    v.verify(idp.mint(headers={"typ": "at+JWT"}))
    assert reason_of(v, idp.mint()) == "bad_type"


# -- delegation chains (RFC 8693 act) ----------------------------------------------------


def test_nested_act_chain_order(idp: OIDCIssuer, verifier: TokenVerifier) -> None:
    act = {"sub": "ci-bot", "act": {"sub": "deployer", "iss": "https://other.example", "act": {"sub": "root-svc"}}}
    v = verifier.verify(idp.mint({"sub": "alice", "act": act}))
    assert [link.id for link in v.chain] == ["ci-bot", "deployer", "root-svc"]
    assert [link.issuer for link in v.chain] == [None, "https://other.example", None]
    assert v.actor_fields()["chain"] == [
        {"id": "ci-bot"}, {"id": "deployer", "issuer": "https://other.example"}, {"id": "root-svc"}
    ]  # fmt: skip


def test_invalid_act_chains(idp: OIDCIssuer, verifier: TokenVerifier) -> None:
    assert reason_of(verifier, idp.mint({"act": "ci-bot"})) == "chain_invalid"
    assert reason_of(verifier, idp.mint({"act": {"iss": "x"}})) == "chain_invalid"
    deep: dict = {"sub": "s0"}
    for i in range(1, 12):
        deep = {"sub": f"s{i}", "act": deep}
    assert reason_of(verifier, idp.mint({"act": deep})) == "chain_invalid"


def test_chain_and_principal_resolved_through_directory(idp: OIDCIssuer, make_verifier) -> None:
    from auditfed.identity.directory import Directory

    d = Directory({"alice@corp.example": ["okta:alice"], "ci@corp.example": ["okta:ci-bot"]})
    v = make_verifier(system="okta", verifier_opts={"directory": d})
    got = v.verify(idp.mint({"sub": "alice", "act": {"sub": "ci-bot"}}))
    assert got.principal == "alice@corp.example"
    assert got.chain[0].principal == "ci@corp.example"


# -- result cache ------------------------------------------------------------------------


def test_results_cached_until_expiry(idp: OIDCIssuer, make_verifier) -> None:
    wall = FakeClock()
    wall.t = time.time()
    v = make_verifier(verifier_opts={"clock": wall, "cache_ttl": 3600})
    token = idp.mint(ttl=120)
    first = v.verify(token)
    assert v.verify(token) is first
    assert v.cache_hits == 1
    wall.advance(120 + 61)  # past exp + leeway: not served from the cache
    with pytest.raises(TokenInvalid) as info:
        v.verify(token)
    assert info.value.reason == "expired"


def test_failures_cached_briefly(idp: OIDCIssuer, verifier: TokenVerifier) -> None:
    token = idp.mint({"aud": "nope"})
    for _ in range(3):
        assert reason_of(verifier, token) == "audience"
    assert verifier.cache_hits == 2


def test_averify_fast_path_and_fetch(idp: OIDCIssuer, verifier: TokenVerifier) -> None:
    async def main() -> None:
        first = await verifier.averify(idp.mint())  # needs a fetch: worker thread
        assert first.subject == "alice"
        # keys cached: runs inline (no fetch, no thread)
        got = await verifier.averify(idp.mint({"sub": "bob"}))
        assert got.subject == "bob"

    asyncio.run(main())
    assert idp.jwks_fetches == 1


def test_keys_unavailable_is_503(idp: OIDCIssuer, verifier: TokenVerifier) -> None:
    idp.down = "503"
    with pytest.raises(KeysUnavailable) as info:
        verifier.verify(idp.mint())
    assert info.value.status == 503 and info.value.reason == "keys_unavailable"


def test_symmetric_keys_in_jwks_are_ignored(idp: OIDCIssuer, http_client) -> None:
    secret = b"s3cret-shared-value-0123456789ab"
    idp.extra_jwks.append({"kty": "oct", "kid": "hmac", "k": b64url(secret)})
    cache = JWKSCache(http_client=http_client)
    cache.register(idp.issuer)
    assert cache.get_keys(idp.issuer, "hmac") == []
    assert cache.stats(idp.issuer)["keys"] == 3
