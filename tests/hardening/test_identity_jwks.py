"""Issue #16 item 8: identity off the hot loop.

A slow identity provider (a real HTTP issuer that holds its JWKS answer) must not
stall the server: ``/healthz`` and other requests answer while a key fetch is in
flight. Tokens with random ``kid`` values, spread over the server process and its
ingest workers, cause at most one refetch per cooldown for the whole server (counted
at the issuer).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from support.oidc_issuer import OIDCIssuer
from support.server import Server

from auditfed.identity.jwks import JWKSCache

WORKLOAD = "system:serviceaccount:payments:api"


@pytest.fixture
def issuer() -> Iterator[OIDCIssuer]:
    with OIDCIssuer(audience="auditfed") as idp:
        yield idp


def start_server(base: Path, issuer: OIDCIssuer, workers: int) -> Server:
    config = base / "auditfed.toml"
    config.write_text(f"""
ingest_workers = {workers}
jwks_timeout = 60

{issuer.toml()}
{issuer.workload_toml()}""")
    return Server(base / "data", "--config", str(config)).start()


def wait_for(check: Callable[[], bool], what: str) -> None:
    for _ in range(600):  # bounded by count and time: at most 30 s
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def warm(server: Server, issuer: OIDCIssuer) -> None:
    """Have the server hold the issuer's keys (a valid workload JWT verifies)."""
    with server.client(issuer.mint({"sub": WORKLOAD})) as http:
        assert http.post("/v1/events", json={"action": "warm.up", "actor": {"id": "x"}}).status_code == 200


def client(server: Server, token: str | None, timeout: float) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=server.url, headers=headers, timeout=timeout)


def random_kid_token(issuer: OIDCIssuer, subject: str = WORKLOAD) -> str:
    return issuer.mint({"sub": subject}, kid=f"unknown-{uuid.uuid4().hex}")


@pytest.mark.parametrize("path", ["workload", "actor-token"])
def test_a_slow_identity_provider_does_not_stall_the_server(
    tmp_path: Path, issuer: OIDCIssuer, path: str
) -> None:
    # workload: a source's JWT is verified by the HTTP process itself; actor-token: an
    # event's actor token is verified by the preparer (in the server process here).
    server = start_server(tmp_path, issuer, workers=2 if path == "workload" else 0)
    try:
        warm(server, issuer)
        source = server.token("source", service="billing-api")
        gate = issuer.jwks_gate = threading.Event()
        before = issuer.jwks_fetches
        if path == "workload":
            slow_token, slow_body = random_kid_token(issuer), {"action": "a.b", "actor": {"id": "x"}}
        else:
            slow_token, slow_body = source, {"action": "a.b", "actor": {"id": "x", "token": random_kid_token(issuer)}}
        answers: list[httpx.Response] = []

        def slow_request() -> None:
            with client(server, slow_token, 90) as http:
                answers.append(http.post("/v1/events", json=slow_body))

        slow = threading.Thread(target=slow_request)
        slow.start()
        try:
            wait_for(lambda: issuer.jwks_fetches > before, "the refetch for the unknown kid")
            # The fetch is now held by the provider (and the server waits up to 60 s for it).
            with client(server, None, 20) as http:
                assert http.get("/healthz").status_code == 200
            with client(server, server.admin_token, 20) as http:
                assert http.get("/v1/log/checkpoint").status_code == 200
            if path == "workload":  # ingest of other sources goes on (workers are free)
                with client(server, source, 20) as http:
                    assert http.post("/v1/events", json={"action": "c.d", "actor": {"id": "y"}}).status_code == 200
            assert not answers, "the slow request was answered before its key fetch ended"
        finally:
            gate.set()
            slow.join(90)
        assert len(answers) == 1
        if path == "workload":
            assert answers[0].status_code == 401 and "kid" in answers[0].json()["detail"]
        else:
            assert answers[0].status_code == 200
    finally:
        server.stop()


def test_random_kids_cause_one_refetch_per_cooldown_for_the_whole_server(tmp_path: Path, issuer: OIDCIssuer) -> None:
    server = start_server(tmp_path, issuer, workers=2)
    try:
        warm(server, issuer)
        source = server.token("source", service="billing-api")
        before, started = issuer.jwks_fetches, time.monotonic()

        def actor_tokens(_: int) -> int:  # verified in the ingest workers
            events = [{"action": "a.b", "actor": {"id": "x", "token": random_kid_token(issuer)}} for _ in range(5)]
            with server.client(source) as http:
                return http.post("/v1/events", json=events).status_code

        def workload_tokens(_: int) -> int:  # verified in the HTTP process
            with server.client(random_kid_token(issuer)) as http:
                return http.post("/v1/events", json={"action": "a.b", "actor": {"id": "x"}}).status_code

        with ThreadPoolExecutor(8) as pool:
            codes = list(pool.map(actor_tokens, range(24))) + list(pool.map(workload_tokens, range(12)))
        elapsed = time.monotonic() - started
        assert codes == [200] * 24 + [401] * 12
        cooldowns = 1 + int(elapsed // 30)  # the default jwks_refetch_cooldown
        assert issuer.jwks_fetches - before <= cooldowns, (issuer.jwks_fetches - before, elapsed)
    finally:
        server.stop()


def test_caches_sharing_a_directory_are_one_cache(tmp_path: Path, issuer: OIDCIssuer) -> None:
    """Two caches on one directory (as the server's processes have) fetch once between
    them, and share one unknown-kid cooldown."""
    first, second = (JWKSCache(shared_dir=tmp_path, unknown_kid_cooldown=3600) for _ in range(2))
    for cache in (first, second):
        cache.register(issuer.issuer, jwks_uri=issuer.jwks_uri)
    known = issuer.signing["RSA"].kid
    assert first.get_keys(issuer.issuer, known) and second.get_keys(issuer.issuer, known)
    assert issuer.jwks_fetches == 1
    for i in range(20):
        cache = first if i % 2 else second
        assert cache.get_keys(issuer.issuer, f"random-{i}") == []
    assert issuer.jwks_fetches == 2  # one refetch for the unknown kids, by either cache
    rotated = issuer.rotate("EC").kid
    assert second.get_keys(issuer.issuer, rotated) == []  # within the cooldown: no fetch
    assert issuer.jwks_fetches == 2
    for cache in (first, second):
        cache.close()
