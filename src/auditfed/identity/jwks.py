"""JWKS cache: the public keys of trusted OIDC issuers, fetched safely.

Implements the key-retrieval side of OpenID Connect Discovery 1.0 (the
``/.well-known/openid-configuration`` document and its ``jwks_uri``) and RFC 7517
(JSON Web Key Set), with the caching behaviour that RFC 8725 (JWT BCP) and
production identity providers expect of a relying party:

* **TTL** — a key set is fresh for the ``Cache-Control: max-age`` the provider sends,
  clamped to ``[min_ttl, max_ttl]`` (``no-store``/``no-cache`` count as ``min_ttl``;
  no header means ``default_ttl``).
* **One fetch in flight per issuer** — a per-issuer lock; callers that arrive while a
  fetch runs wait for it and use its result instead of fetching again.
* **Unknown ``kid``** — triggers one refetch (keys may have rotated), at most once per
  ``unknown_kid_cooldown`` per issuer, so a flood of tokens with random ``kid`` values
  cannot flood the identity provider.
* **Last-known-good** — when a refresh fails the previous keys keep verifying (up to
  ``max_stale`` past their TTL) and the next attempt waits ``error_backoff``.
* **Synchronous** — everything runs on a plain :class:`httpx.Client`, so it can be
  called from threads and from sync code; :meth:`JWKSCache.get_keys` with
  ``allow_fetch=False`` never does I/O, which lets async callers take the fast path on
  the event loop and push only real fetches to a worker thread.

Only asymmetric signature keys (RSA, EC, OKP) are ever accepted from a key set: a
symmetric (``oct``) key published in a JWKS is ignored, which (with the algorithm
allowlist in :mod:`auditfed.identity.oidc`) closes the RS256→HS256 confusion attack.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, JWKRegistry, OKPKey, RSAKey

from auditfed.errors import AuditfedError, ConfigError, Unavailable

__all__ = [
    "AsymmetricKey",
    "JWKSCache",
    "JWKSError",
    "KeyFetchRequired",
    "check_endpoint_url",
    "discovery_url",
]

log = logging.getLogger(__name__)

AsymmetricKey = RSAKey | ECKey | OKPKey

#: Largest discovery document or key set accepted (bytes).
MAX_DOCUMENT_BYTES = 512 * 1024
_LOOPBACK_HOSTS = {"127.0.0.1", "::1", "localhost"}
_MAX_AGE_RE = re.compile(r"(?:^|,)\s*max-age\s*=\s*\"?(\d+)\"?\s*(?:,|$)", re.IGNORECASE)


class JWKSError(Unavailable):
    """The key set of an issuer cannot be obtained (and no usable keys are cached)."""

    title = "Identity provider keys unavailable"


class KeyFetchRequired(AuditfedError):
    """Raised by :meth:`JWKSCache.get_keys` with ``allow_fetch=False`` when answering
    would need network I/O. Internal signal for the async fast path."""


def check_endpoint_url(url: str, what: str) -> str:
    """Require ``https``, except for loopback hosts (local tests and sidecars)."""
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return url
    if parts.scheme == "http" and parts.hostname in _LOOPBACK_HOSTS:
        return url
    raise ConfigError(f"{what} must be an https URL (http only on loopback): {url!r}")


def discovery_url(issuer: str) -> str:
    """OIDC Discovery 1.0 §4: issuer (trailing ``/`` removed) + well-known path."""
    return issuer.rstrip("/") + "/.well-known/openid-configuration"


def parse_max_age(cache_control: str | None) -> int | None:
    """Seconds from ``Cache-Control`` (RFC 9111 §5.2.2.1), 0 for no-store/no-cache."""
    if not cache_control:
        return None
    lowered = cache_control.lower()
    if "no-store" in lowered or "no-cache" in lowered:
        return 0
    m = _MAX_AGE_RE.search(lowered)
    return int(m.group(1)) if m else None


@dataclass
class _IssuerState:
    issuer: str
    jwks_uri: str | None
    discover: bool
    lock: threading.Lock = field(default_factory=threading.Lock)
    keys: dict[str | None, tuple[AsymmetricKey, ...]] = field(default_factory=dict)
    fetched_at: float | None = None  # monotonic time of the last successful fetch
    fresh_until: float = 0.0  # keys are fresh until then
    next_attempt: float = 0.0  # no fetch attempt before then (error backoff)
    last_unknown_kid_fetch: float = float("-inf")
    generation: int = 0  # bumped when a fetch attempt ends (success or failure)
    fetches: int = 0
    failures: int = 0
    last_error: str | None = None
    resolved_jwks_uri: str | None = None
    resolved_at: float = float("-inf")


class JWKSCache:
    """Thread-safe cache of the signing keys of trusted issuers.

    :param http_client: the :class:`httpx.Client` used for fetches (one is created
        when omitted; pass your own to set proxies, CA bundle, timeouts).
    :param default_ttl: freshness when the provider sends no ``max-age``.
    :param min_ttl: lower bound for the provider's ``max-age`` (also used on ``no-store``).
    :param max_ttl: upper bound for the provider's ``max-age``.
    :param unknown_kid_cooldown: at most one refetch per issuer per this many seconds
        caused by tokens carrying a ``kid`` the cache does not know.
    :param error_backoff: after a failed fetch, no new attempt for this many seconds.
    :param max_stale: last-known-good keys keep verifying this long past their TTL
        while the provider is unreachable (``None``: forever).
    :param clock: monotonic clock (tests).
    """

    def __init__(
        self,
        *,
        http_client: httpx.Client | None = None,
        default_ttl: float = 300.0,
        min_ttl: float = 30.0,
        max_ttl: float = 86_400.0,
        unknown_kid_cooldown: float = 30.0,
        error_backoff: float = 10.0,
        max_stale: float | None = 7 * 86_400.0,
        timeout: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = http_client or httpx.Client(timeout=timeout, follow_redirects=False)
        self._owns_client = http_client is None
        self.default_ttl = default_ttl
        self.min_ttl = min_ttl
        self.max_ttl = max_ttl
        self.unknown_kid_cooldown = unknown_kid_cooldown
        self.error_backoff = error_backoff
        self.max_stale = max_stale
        self._clock = clock
        self._issuers: dict[str, _IssuerState] = {}
        self._registry_lock = threading.Lock()

    # -- configuration -----------------------------------------------------------------

    def register(self, issuer: str, *, jwks_uri: str | None = None, discover: bool = True) -> None:
        """Declare an issuer; its keys come from ``jwks_uri`` or from OIDC discovery."""
        if jwks_uri is None and not discover:
            raise ConfigError(f"issuer {issuer!r}: need jwks_uri or discovery")
        if jwks_uri is not None:
            check_endpoint_url(jwks_uri, "jwks_uri")
        with self._registry_lock:
            self._issuers[issuer] = _IssuerState(issuer, jwks_uri, discover)

    def close(self) -> None:
        if self._owns_client:
            self._client.close()

    def stats(self, issuer: str) -> dict[str, Any]:
        """Counters for metrics and tests: fetches, failures, key count, freshness."""
        st = self._state(issuer)
        now = self._clock()
        return {
            "fetches": st.fetches,
            "failures": st.failures,
            "keys": sum(len(v) for v in st.keys.values()),
            "fresh": now < st.fresh_until,
            "last_error": st.last_error,
            "jwks_uri": st.jwks_uri or st.resolved_jwks_uri,
        }

    # -- lookups -----------------------------------------------------------------------

    def get_keys(self, issuer: str, kid: str | None, *, allow_fetch: bool = True) -> list[AsymmetricKey]:
        """Candidate verification keys of ``issuer`` for ``kid``.

        Returns the keys published under that ``kid`` (for a token without ``kid``: all
        keys; the caller filters by algorithm). Fetches when the set is stale or the
        ``kid`` is unknown (subject to the cooldown). Raises :class:`JWKSError` when no
        keys can be had, :class:`KeyFetchRequired` when ``allow_fetch`` is false and
        I/O would be needed, and returns ``[]`` for a ``kid`` that stays unknown.
        """
        st = self._state(issuer)
        now = self._clock()
        if st.keys and now < st.fresh_until:
            found = self._lookup(st, kid)
            if found:
                return found
            if st.lock.locked():  # a fetch is in flight: its result may have the kid
                if not allow_fetch:
                    raise KeyFetchRequired("fetch in flight")
                with st.lock:
                    pass
                found = self._lookup(st, kid)
            if found or self._clock() - st.last_unknown_kid_fetch < self.unknown_kid_cooldown:
                return found
            # unknown kid on a fresh set: maybe a rotation -> one refetch per cooldown
            if not allow_fetch:
                raise KeyFetchRequired("refetch for unknown kid")
            return self._refresh_for_kid(st, kid)
        # stale or empty
        if now < st.next_attempt:  # backing off after a failure: serve last-known-good
            return self._serve_stale(st, kid, now)
        if not allow_fetch:
            raise KeyFetchRequired("key set stale")
        gen = st.generation
        if st.keys and self._lookup(st, kid):
            # stale-while-revalidate: one caller refreshes, the others keep verifying
            # with the last-known-good keys instead of queueing behind the fetch
            if not st.lock.acquire(blocking=False):
                return self._serve_stale(st, kid, now)
        else:
            st.lock.acquire()
        try:
            # nobody fetched while we waited (and the set is still stale)
            if st.generation == gen and not (st.keys and self._clock() < st.fresh_until):
                self._fetch(st)
        finally:
            st.lock.release()
        now = self._clock()
        if st.keys and now < st.fresh_until:
            return self._lookup(st, kid)
        return self._serve_stale(st, kid, now)

    def refresh(self, issuer: str) -> bool:
        """Fetch now (ignoring TTL); True on success. Keeps old keys on failure."""
        st = self._state(issuer)
        with st.lock:
            return self._fetch(st)

    # -- internals ---------------------------------------------------------------------

    def _state(self, issuer: str) -> _IssuerState:
        try:
            return self._issuers[issuer]
        except KeyError:
            raise ConfigError(f"issuer not registered with the JWKS cache: {issuer!r}") from None

    @staticmethod
    def _lookup(st: _IssuerState, kid: str | None) -> list[AsymmetricKey]:
        if kid is None:
            return [k for ks in st.keys.values() for k in ks]
        return list(st.keys.get(kid, ()))

    def _refresh_for_kid(self, st: _IssuerState, kid: str | None) -> list[AsymmetricKey]:
        gen = st.generation
        with st.lock:
            now = self._clock()
            found = self._lookup(st, kid)
            if found:
                return found
            if st.generation == gen and now - st.last_unknown_kid_fetch >= self.unknown_kid_cooldown:
                st.last_unknown_kid_fetch = now
                self._fetch(st)
            return self._lookup(st, kid)

    def _serve_stale(self, st: _IssuerState, kid: str | None, now: float) -> list[AsymmetricKey]:
        if st.keys and (self.max_stale is None or st.fetched_at is None or now - st.fresh_until <= self.max_stale):
            return self._lookup(st, kid)
        reason = st.last_error or "no keys fetched yet"
        raise JWKSError(f"signing keys of issuer {st.issuer!r} unavailable: {reason}")

    def _fetch(self, st: _IssuerState) -> bool:
        """One fetch (caller holds ``st.lock``). Never raises for network/format faults.
        ``generation`` is bumped when the attempt is over, so callers that queued on
        the lock during it see the change and do not fetch again."""
        st.fetches += 1
        now = self._clock()
        try:
            uri = self._jwks_uri(st, now)
            doc, headers = self._get_json(uri)
            keys = _import_key_set(doc)
        except (httpx.HTTPError, ValueError, AuditfedError, JoseError) as exc:
            st.generation += 1
            st.failures += 1
            st.last_error = _describe(exc)
            st.next_attempt = self._clock() + self.error_backoff
            log.warning("JWKS fetch for %s failed: %s", st.issuer, st.last_error)
            return False
        max_age = parse_max_age(headers.get("cache-control"))
        ttl = self.default_ttl if max_age is None else min(max(max_age, self.min_ttl), self.max_ttl)
        done = self._clock()
        st.generation += 1
        st.keys = keys
        st.fetched_at = done
        st.fresh_until = done + ttl
        st.next_attempt = 0.0
        st.last_error = None
        return True

    def _jwks_uri(self, st: _IssuerState, now: float) -> str:
        if st.jwks_uri is not None:
            return st.jwks_uri
        if st.resolved_jwks_uri is None or now - st.resolved_at > self.max_ttl:
            doc, _ = self._get_json(discovery_url(st.issuer))
            # OIDC Discovery §4.3: the document's issuer MUST equal the configured one.
            if doc.get("issuer") != st.issuer:
                raise ValueError("discovery document 'issuer' does not match the configured issuer")
            uri = doc.get("jwks_uri")
            if not isinstance(uri, str):
                raise ValueError("discovery document has no 'jwks_uri'")
            st.resolved_jwks_uri = check_endpoint_url(uri, "jwks_uri")
            st.resolved_at = now
        return st.resolved_jwks_uri

    def _get_json(self, url: str) -> tuple[dict[str, Any], httpx.Headers]:
        with self._client.stream("GET", url, headers={"Accept": "application/json"}) as resp:
            if resp.status_code != 200:
                raise ValueError(f"HTTP {resp.status_code} from {url}")
            body = bytearray()
            for chunk in resp.iter_bytes():
                body += chunk
                if len(body) > MAX_DOCUMENT_BYTES:
                    raise ValueError(f"document from {url} exceeds {MAX_DOCUMENT_BYTES} bytes")
            headers = resp.headers
        doc = orjson.loads(bytes(body))
        if not isinstance(doc, dict):
            raise ValueError(f"document from {url} is not a JSON object")
        return doc, headers


def _import_key_set(doc: dict[str, Any]) -> dict[str | None, tuple[AsymmetricKey, ...]]:
    """RFC 7517 §5: import usable public signature keys, skip the rest."""
    raw = doc.get("keys")
    if not isinstance(raw, list):
        raise ValueError("JWKS has no 'keys' array")
    out: dict[str | None, list[AsymmetricKey]] = {}
    for item in raw:
        if not isinstance(item, dict) or item.get("kty") not in ("RSA", "EC", "OKP"):
            continue  # never symmetric keys; unknown kty ignored per RFC 7517 §5
        if item.get("use", "sig") != "sig":
            continue
        ops = item.get("key_ops")
        if ops is not None and "verify" not in ops:
            continue
        public = {k: v for k, v in item.items() if k not in ("d", "p", "q", "dp", "dq", "qi", "oth")}
        try:
            key = JWKRegistry.import_key(public)
        except (JoseError, ValueError, TypeError) as exc:
            log.warning("skipping unusable JWK (kid=%r): %s", item.get("kid"), _describe(exc))
            continue
        if not isinstance(key, RSAKey | ECKey | OKPKey):
            continue
        if isinstance(key, RSAKey) and key.raw_value.key_size < 2048:  # RFC 7518 §3.3
            continue
        kid = item.get("kid") if isinstance(item.get("kid"), str) else None
        out.setdefault(kid, []).append(key)
    if not out:
        raise ValueError("JWKS contains no usable signature keys")
    return {k: tuple(v) for k, v in out.items()}


def _describe(exc: BaseException) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return "timeout"
    if isinstance(exc, httpx.HTTPError):
        return f"{type(exc).__name__}"
    if isinstance(exc, orjson.JSONDecodeError):
        return "invalid JSON"
    text = str(exc)
    return text[:200] if text else type(exc).__name__
