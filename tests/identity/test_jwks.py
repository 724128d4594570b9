"""JWKS cache behaviour against the real loopback issuer: TTL, single flight,
unknown-kid cooldown, rotation, last-known-good."""

from __future__ import annotations

import threading
import uuid

import pytest
from support.oidc_issuer import FakeClock, OIDCIssuer

from auditfed.identity.jwks import JWKSCache, parse_max_age
from auditfed.identity.oidc import KeysUnavailable, TokenInvalid, TokenVerifier


def test_unknown_kid_flood_is_bounded_by_cooldown(idp: OIDCIssuer, make_verifier, clock: FakeClock) -> None:
    v = make_verifier(jwks_opts={"unknown_kid_cooldown": 30})
    v.verify(idp.mint())
    assert idp.jwks_fetches == 1
    for _ in range(500):  # a flood of tokens with random kids
        with pytest.raises(TokenInvalid) as info:
            v.verify(idp.mint(kid=uuid.uuid4().hex))
        assert info.value.reason == "unknown_kid"
    assert idp.jwks_fetches == 2  # one refetch for the whole flood
    clock.advance(31)
    for _ in range(500):
        with pytest.raises(TokenInvalid):
            v.verify(idp.mint(kid=uuid.uuid4().hex))
    assert idp.jwks_fetches == 3  # at most one more per cooldown period
    v.verify(idp.mint())  # known keys keep working throughout
    assert idp.jwks_fetches == 3


def test_unknown_kid_flood_from_many_threads(idp: OIDCIssuer, make_verifier) -> None:
    v = make_verifier(jwks_opts={"unknown_kid_cooldown": 30})
    v.verify(idp.mint())
    tokens = [idp.mint(kid=uuid.uuid4().hex) for _ in range(200)]
    errors: list[str] = []

    def worker(chunk: list[str]) -> None:
        for t in chunk:
            try:
                v.verify(t)
            except TokenInvalid as exc:
                errors.append(exc.reason)

    threads = [threading.Thread(target=worker, args=(tokens[i::8],)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == ["unknown_kid"] * 200
    assert idp.jwks_fetches == 2


def test_one_fetch_in_flight_per_issuer(idp: OIDCIssuer, make_verifier) -> None:
    """Cold cache, 16 concurrent callers, slow IdP: exactly one JWKS request."""
    v = make_verifier()
    idp.jwks_delay = 0.3
    tokens = [idp.mint({"sub": f"user{i}"}) for i in range(16)]
    results: list[str] = []
    barrier = threading.Barrier(16)

    def worker(token: str) -> None:
        barrier.wait()
        results.append(v.verify(token).subject)

    threads = [threading.Thread(target=worker, args=(t,)) for t in tokens]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == sorted(f"user{i}" for i in range(16))
    assert idp.jwks_fetches == 1
    assert idp.discovery_fetches == 1


def test_key_rotation_picked_up(idp: OIDCIssuer, make_verifier, clock: FakeClock) -> None:
    v = make_verifier(jwks_opts={"unknown_kid_cooldown": 30})
    old_token = idp.mint()
    v.verify(old_token)
    new_key = idp.rotate("RSA")  # old RSA key unpublished, new kid
    new_token = idp.mint()
    got = v.verify(new_token)
    assert got.key_id == new_key.kid
    assert idp.jwks_fetches == 2
    # the old key is gone from the set now: a token it signs no longer verifies
    v.clear_cache()
    clock.advance(31)
    with pytest.raises(TokenInvalid) as info:
        v.verify(old_token)
    assert info.value.reason == "unknown_kid"


def test_concurrent_callers_wait_for_rotation_fetch(idp: OIDCIssuer, make_verifier) -> None:
    v = make_verifier(jwks_opts={"unknown_kid_cooldown": 30})
    v.verify(idp.mint())
    idp.rotate("EC")
    idp.jwks_delay = 0.3
    tokens = [idp.mint({"sub": f"u{i}"}, alg="ES256") for i in range(12)]
    results: list[str] = []
    barrier = threading.Barrier(len(tokens))

    def worker(token: str) -> None:
        barrier.wait()
        results.append(v.verify(token).subject)

    threads = [threading.Thread(target=worker, args=(t,)) for t in tokens]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 12
    assert idp.jwks_fetches == 2


def test_rotation_of_each_key_type(idp: OIDCIssuer, make_verifier, clock: FakeClock) -> None:
    v = make_verifier(jwks_opts={"unknown_kid_cooldown": 5})
    v.verify(idp.mint())
    for kty, alg in (("RSA", "RS256"), ("EC", "ES256"), ("OKP", "EdDSA")):
        clock.advance(6)
        key = idp.rotate(kty, retire_old=False)
        assert v.verify(idp.mint(alg=alg)).key_id == key.kid


def test_ttl_follows_cache_control(idp: OIDCIssuer, make_verifier, clock: FakeClock) -> None:
    idp.cache_control = "public, max-age=120"
    v = make_verifier(jwks_opts={"min_ttl": 30, "max_ttl": 3600})
    v.verify(idp.mint())
    clock.advance(100)
    v.verify(idp.mint())
    assert idp.jwks_fetches == 1
    clock.advance(25)  # 125 s > max-age
    v.verify(idp.mint())
    assert idp.jwks_fetches == 2


@pytest.mark.parametrize(
    ("header", "advance", "fetches"),
    [
        ("max-age=1", 10, 1),  # clamped up to min_ttl=30
        ("max-age=999999", 3601, 2),  # clamped down to max_ttl=3600
        ("no-store", 31, 2),  # min_ttl
        (None, 299, 1),  # default_ttl=300
        (None, 301, 2),
    ],
)
def test_ttl_bounds(idp: OIDCIssuer, make_verifier, clock: FakeClock, header, advance, fetches) -> None:
    idp.cache_control = header
    v = make_verifier(jwks_opts={"min_ttl": 30, "max_ttl": 3600, "default_ttl": 300})
    v.verify(idp.mint())
    clock.advance(advance)
    v.verify(idp.mint())
    assert idp.jwks_fetches == fetches


def test_parse_max_age() -> None:
    assert parse_max_age("max-age=60") == 60
    assert parse_max_age("public, max-age=3600, must-revalidate") == 3600
    assert parse_max_age("s-maxage=10") is None
    assert parse_max_age("no-cache") == 0
    assert parse_max_age(None) is None


@pytest.mark.parametrize("mode", ["503", "close"])
def test_issuer_down_last_known_good(idp: OIDCIssuer, make_verifier, clock: FakeClock, mode: str) -> None:
    v = make_verifier(jwks_opts={"default_ttl": 60, "error_backoff": 10})
    v.verify(idp.mint({"sub": "before"}))
    idp.down = mode  # type: ignore[assignment]
    clock.advance(61)  # keys stale; refresh fails
    for i in range(50):
        assert v.verify(idp.mint({"sub": f"during{i}"})).subject == f"during{i}"
    assert idp.jwks_fetches == 2  # one failed attempt, then backoff
    stats = v.jwks.stats(idp.issuer)
    assert stats["failures"] == 1 and stats["last_error"]
    clock.advance(11)  # backoff over: one more attempt, still last-known-good
    v.verify(idp.mint({"sub": "later"}))
    assert idp.jwks_fetches == 3
    idp.down = None
    clock.advance(11)
    v.verify(idp.mint({"sub": "recovered"}))
    assert idp.jwks_fetches == 4
    assert v.jwks.stats(idp.issuer)["fresh"]


def test_issuer_down_unknown_kid_keeps_old_keys(idp: OIDCIssuer, make_verifier) -> None:
    v = make_verifier()
    v.verify(idp.mint())
    idp.down = "503"
    with pytest.raises(TokenInvalid) as info:
        v.verify(idp.mint(kid="rotated-but-unreachable"))
    assert info.value.reason == "unknown_kid"
    v.verify(idp.mint({"sub": "still-fine"}))


def test_issuer_down_without_cached_keys(idp: OIDCIssuer, make_verifier, clock: FakeClock) -> None:
    v = make_verifier(jwks_opts={"error_backoff": 10})
    idp.down = "close"
    for _ in range(5):
        with pytest.raises(KeysUnavailable):
            v.verify(idp.mint())
    assert idp.discovery_fetches == 1  # backoff: one attempt
    idp.down = None
    clock.advance(11)
    v.verify(idp.mint())


def test_last_known_good_has_a_limit(idp: OIDCIssuer, make_verifier, clock: FakeClock) -> None:
    v = make_verifier(jwks_opts={"default_ttl": 60, "max_stale": 600, "error_backoff": 1})
    v.verify(idp.mint())
    idp.down = "503"
    clock.advance(61 + 500)
    v.verify(idp.mint({"sub": "stale-but-ok"}))
    clock.advance(200)
    with pytest.raises(KeysUnavailable):
        v.verify(idp.mint({"sub": "too-stale"}))


def test_discovery_issuer_mismatch_is_refused(idp: OIDCIssuer, http_client) -> None:
    cache = JWKSCache(http_client=http_client)
    cache.register(idp.issuer + "/")  # discovery doc says idp.issuer, without the slash
    assert cache.refresh(idp.issuer + "/") is False
    assert "does not match" in cache.stats(idp.issuer + "/")["last_error"]


def test_allow_fetch_false_never_does_io(idp: OIDCIssuer, verifier: TokenVerifier) -> None:
    from auditfed.identity.jwks import KeyFetchRequired

    with pytest.raises(KeyFetchRequired):
        verifier.jwks.get_keys(idp.issuer, idp.signing["RSA"].kid, allow_fetch=False)
    assert idp.jwks_fetches == 0
