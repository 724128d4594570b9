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
  the event loop and push only real fetches to a worker thread. Every fetch has a
  timeout (``timeout``, 5 s by default).
* **One cache per server** — with ``shared_dir`` (a private directory the server
  creates for its run), the processes of one server (the HTTP process and its ingest
  workers) share one key set per issuer, its freshness, error backoff and the
  unknown-``kid`` cooldown: a JSON file per issuer, replaced atomically, so reading it
  takes no lock, and an exclusive ``flock`` around each fetch, under which the
  process re-reads the file and fetches only if no other process did meanwhile.
  Times in it are ``time.monotonic()`` values, which Linux keeps one clock for all
  processes of a boot; the directory does not outlive the server's run.

Only asymmetric signature keys (RSA, EC, OKP) are ever accepted from a key set: a
symmetric (``oct``) key published in a JWKS is ignored, which (with the algorithm
allowlist in :mod:`auditfed.identity.oidc`) closes the RS256→HS256 confusion attack.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
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
    document: dict[str, Any] | None = None  # the key set as fetched (what is shared)
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
    shared_version: int = 0  # the version of the shared file this state holds


#: What one process's state shares with the others (see ``shared_dir``).
_SHARED_FIELDS = ("fetched_at", "fresh_until", "next_attempt", "last_unknown_kid_fetch", "last_error",
                  "resolved_jwks_uri", "resolved_at")
#: Shared times whose "never" is -inf (JSON has no infinity: written as null).
_NEVER_FIELDS = frozenset({"last_unknown_kid_fetch", "resolved_at"})


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
    :param timeout: seconds a discovery or key-set request may take.
    :param shared_dir: a private directory shared by the server's processes: one key
        set, backoff and unknown-``kid`` cooldown per issuer for all of them.
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
        shared_dir: Path | None = None,
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
        self._shared_dir = shared_dir
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
        if self._load_shared(st) and st.keys and self._clock() < st.fresh_until:
            return self.get_keys(issuer, kid)  # another process fetched: now fresh
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
                self._fetch(st, lambda: not (st.keys and self._clock() < st.fresh_until)
                            and self._clock() >= st.next_attempt)
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
            return self._fetch(st, lambda: True)

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
        with st.lock:
            self._load_shared(st)  # another process may have fetched the kid already
            found = self._lookup(st, kid)
            if found:
                return found

            def needed() -> bool:  # under the server-wide lock, with what every process did
                now = self._clock()
                if self._lookup(st, kid) or now - st.last_unknown_kid_fetch < self.unknown_kid_cooldown:
                    return False
                st.last_unknown_kid_fetch = now
                return True

            self._fetch(st, needed)
            return self._lookup(st, kid)

    def _serve_stale(self, st: _IssuerState, kid: str | None, now: float) -> list[AsymmetricKey]:
        if st.keys and (self.max_stale is None or st.fetched_at is None or now - st.fresh_until <= self.max_stale):
            return self._lookup(st, kid)
        reason = st.last_error or "no keys fetched yet"
        raise JWKSError(f"signing keys of issuer {st.issuer!r} unavailable: {reason}")

    def _fetch(self, st: _IssuerState, needed: Callable[[], bool]) -> bool:
        """Fetch if ``needed()`` still says so once this process holds the server-wide
        lock and has read what the other processes fetched (caller holds ``st.lock``)."""
        with self._shared_lock(st):
            self._load_shared(st)
            if not needed():
                return bool(st.keys)
            try:
                return self._fetch_now(st)
            finally:
                self._save_shared(st)

    # -- the state shared by the server's processes ------------------------------------

    def _shared_path(self, st: _IssuerState, suffix: str) -> Path | None:
        if self._shared_dir is None:
            return None
        return self._shared_dir / (hashlib.sha256(st.issuer.encode()).hexdigest()[:32] + suffix)

    @contextlib.contextmanager
    def _shared_lock(self, st: _IssuerState) -> Iterator[None]:
        path = self._shared_path(st, ".lock")
        if path is None:
            yield
            return
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # released when fd closes, even if we die
            yield
        finally:
            os.close(fd)

    def _load_shared(self, st: _IssuerState) -> bool:
        """Take the shared state when another process wrote a newer one; True if so."""
        path = self._shared_path(st, ".json")
        if path is None:
            return False
        try:
            shared = orjson.loads(path.read_bytes())
        except FileNotFoundError:
            return False
        except (OSError, orjson.JSONDecodeError) as exc:
            log.warning("unreadable shared JWKS state %s: %s", path, _describe(exc))
            return False
        if shared["version"] <= st.shared_version:
            return False
        if shared["document"] is not None and shared["document"] != st.document:
            st.keys = _import_key_set(shared["document"])
            st.document = shared["document"]
        for name in _SHARED_FIELDS:
            value = shared[name]
            setattr(st, name, float("-inf") if value is None and name in _NEVER_FIELDS else value)
        st.shared_version = shared["version"]
        st.generation += 1
        return True

    def _save_shared(self, st: _IssuerState) -> None:
        path = self._shared_path(st, ".json")
        if path is None:
            return
        st.shared_version += 1
        state = {"version": st.shared_version, "document": st.document,
                 **{name: None if getattr(st, name) == float("-inf") else getattr(st, name)
                    for name in _SHARED_FIELDS}}
        partial = path.with_suffix(f".{os.getpid()}.tmp")
        partial.write_bytes(orjson.dumps(state))
        partial.replace(path)  # readers see the old state or the new, never half

    def _fetch_now(self, st: _IssuerState) -> bool:
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
        st.document = {"keys": [_public(item) for item in doc["keys"] if isinstance(item, dict)]}
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
        public = _public(item)
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


def _public(jwk: dict[str, Any]) -> dict[str, Any]:
    """A JWK without its private members (a provider may publish them by mistake)."""
    return {k: v for k, v in jwk.items() if k not in ("d", "p", "q", "dp", "dq", "qi", "oth", "k")}


def _describe(exc: BaseException) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return "timeout"
    if isinstance(exc, httpx.HTTPError):
        return f"{type(exc).__name__}"
    if isinstance(exc, orjson.JSONDecodeError):
        return "invalid JSON"
    text = str(exc)
    return text[:200] if text else type(exc).__name__
