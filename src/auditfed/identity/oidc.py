"""Verification of bearer JWTs issued by trusted OpenID Connect issuers.

Standards: RFC 7519 (JWT), RFC 7515 (JWS compact serialisation), RFC 7518/RFC 8037/
RFC 9864 (algorithms), OpenID Connect Discovery 1.0 (keys, via
:mod:`auditfed.identity.jwks`), RFC 8693 §4.1 (``act`` delegation chains) and the
RFC 8725 JWT Best Current Practices, which this module follows:

* the issuer is chosen by an **exact** string match of ``iss`` against configuration
  (no normalisation: a trailing slash or any one-character difference is untrusted);
* ``alg`` must be in the issuer's allowlist **and** fit the key (RSA key for RS*/PS*,
  EC P-256 for ES256, Ed25519 for EdDSA); ``none`` and HMAC are never accepted, and
  keys come only from the issuer's JWKS, never from the token (``jwk``, ``jku``,
  ``x5u``, ``x5c`` headers are rejected) — which defeats algorithm confusion;
* a ``crit`` header is rejected (no extension is understood), as is ``b64``;
* ``aud`` must intersect the configured audiences; ``exp`` (required), ``nbf`` and
  ``iat`` are checked with a small leeway (signature and claims checks use joserfc);
* errors say why (a stable ``reason`` code plus a sentence) but never echo the
  token, its signature or key material.

Verification with cached keys is synchronous and does no I/O; key fetches happen in
the JWKS cache, never on an event loop: :meth:`TokenVerifier.averify` moves them to a
thread, and :meth:`TokenVerifier.verify` called on an event loop's thread answers
``keys_unavailable`` rather than stall every other request behind the fetch.
Verified results are kept in an LRU keyed by the SHA-256 of the token
until it expires (at most ``cache_ttl``), because ingest sees the same user token on
many events; deterministic failures are cached briefly too.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

import httpx
import orjson
from joserfc.errors import ExpiredTokenError, JoseError, MissingClaimError
from joserfc.jws import JWSRegistry
from joserfc.jwt import JWTClaimsRegistry
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from auditfed.errors import ConfigError, Unauthenticated
from auditfed.identity.directory import Directory
from auditfed.identity.jwks import (
    AsymmetricKey,
    JWKSCache,
    JWKSError,
    KeyFetchRequired,
    check_endpoint_url,
)

__all__ = [
    "DEFAULT_ALGORITHMS",
    "SUPPORTED_ALGORITHMS",
    "ChainLink",
    "IssuerConfig",
    "KeysUnavailable",
    "Reason",
    "TokenInvalid",
    "TokenVerifier",
    "VerifiedToken",
]

#: Asymmetric JWS algorithms an issuer may allow (RFC 7518 §3.1, RFC 8037, RFC 9864).
SUPPORTED_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA", "Ed25519"}
)
DEFAULT_ALGORITHMS = ("RS256", "ES256", "EdDSA", "Ed25519")
#: Header parameters that would let the token choose its own key (RFC 8725 §3.10).
FORBIDDEN_HEADERS = ("jwk", "jku", "x5u", "x5c")
MAX_TOKEN_LENGTH = 16 * 1024
MAX_CHAIN_DEPTH = 8

_COMPACT = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
_ALGS = JWSRegistry.algorithms  # name -> joserfc algorithm model

Reason = Literal[
    "malformed",
    "too_large",
    "encrypted",
    "alg_none",
    "alg_not_allowed",
    "forbidden_header",
    "crit_unsupported",
    "bad_type",
    "untrusted_issuer",
    "unknown_kid",
    "key_mismatch",
    "bad_signature",
    "expired",
    "not_yet_valid",
    "issued_in_future",
    "audience",
    "missing_claim",
    "invalid_claim",
    "principal_missing",
    "principal_unverified",
    "chain_invalid",
    "keys_unavailable",
]
# failures that stay failures: cached for ``negative_ttl`` (not time- or key-dependent)
_STICKY_REASONS = frozenset(
    {
        "malformed", "too_large", "encrypted", "alg_none", "alg_not_allowed", "forbidden_header",
        "crit_unsupported", "bad_type", "untrusted_issuer", "key_mismatch", "bad_signature",
        "expired", "audience", "missing_claim", "invalid_claim", "principal_missing",
        "principal_unverified", "chain_invalid",
    }
)  # fmt: skip


class TokenInvalid(Unauthenticated):
    """A bearer token failed verification. ``reason`` is a stable code (see
    :data:`Reason`); the message explains it without token or key material."""

    title = "Invalid token"

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(detail, reason=reason)
        self.reason: Reason = reason


class KeysUnavailable(TokenInvalid):
    """The issuer's keys cannot be obtained (IdP down, nothing cached): not the
    token's fault, so the API answers 503; ingest records the event unverified."""

    status = 503
    title = "Identity provider unavailable"


class IssuerConfig(BaseModel):
    """One trusted issuer (an ``[[issuers]]`` entry of ``auditfed.toml``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    issuer: str = Field(min_length=1, description="exact `iss` value; compared byte for byte")
    jwks_uri: str | None = Field(None, description="JWKS URL; if unset, OIDC discovery")
    discovery: bool = Field(True, description="use /.well-known/openid-configuration when no jwks_uri")
    audiences: tuple[str, ...] = Field(min_length=1, description="accepted `aud` values")
    algorithms: tuple[str, ...] = DEFAULT_ALGORITHMS
    principal_claim: str = Field("sub", min_length=1, description="claim naming the principal")
    system: str | None = Field(None, description="directory namespace of the principal claim")
    leeway: int = Field(60, ge=0, le=300, description="clock skew allowed for exp/nbf/iat (s)")
    require_exp: bool = True
    token_types: tuple[str, ...] | None = Field(
        None, description="accepted `typ` headers (RFC 8725 §3.11), case-insensitive; None: any"
    )

    @field_validator("issuer")
    @classmethod
    def _issuer_url(cls, v: str) -> str:
        if v != v.strip():
            raise ValueError("issuer must not have surrounding whitespace")
        return v

    @field_validator("algorithms")
    @classmethod
    def _algorithms(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if not v:
            raise ValueError("at least one algorithm must be allowed")
        for alg in v:
            if alg.lower() == "none":
                raise ValueError("'none' is never an acceptable algorithm")
            if alg.upper().startswith("HS"):
                raise ValueError(f"{alg}: HMAC algorithms are not accepted with public issuer keys")
            if alg not in SUPPORTED_ALGORITHMS:
                raise ValueError(f"unsupported algorithm {alg!r}; choose from {sorted(SUPPORTED_ALGORITHMS)}")
        return v

    @model_validator(mode="after")
    def _endpoints(self) -> IssuerConfig:
        try:
            if self.jwks_uri is not None:
                check_endpoint_url(self.jwks_uri, "jwks_uri")
            elif self.discovery:
                check_endpoint_url(self.issuer, "issuer (for discovery)")
            else:
                raise ValueError("set jwks_uri or enable discovery")
        except ConfigError as exc:
            raise ValueError(exc.detail) from None
        return self


@dataclass(frozen=True, slots=True)
class ChainLink:
    """One actor of an RFC 8693 delegation chain (or a pipeline's triggering person).

    ``issuer`` is the ``act.iss`` when the token gives one (absent: the token issuer's
    namespace). ``principal`` is filled when the directory resolves the id."""

    id: str
    issuer: str | None = None
    type: str | None = None
    principal: str | None = None

    def as_dict(self) -> dict[str, str]:
        """The event ``actor.chain`` entry (``None`` fields left out)."""
        return {k: v for k in ("id", "type", "issuer", "principal") if (v := getattr(self, k)) is not None}


@dataclass(frozen=True, slots=True)
class VerifiedToken:
    """The verified facts of a token. The token itself is not kept: ``token_id`` is its
    ``jti`` or ``sha256:<hex digest>``. Treat ``claims`` as read-only (results are
    shared between callers through the cache)."""

    issuer: str
    subject: str
    principal: str
    audience: tuple[str, ...]
    claims: Mapping[str, Any]
    token_id: str
    digest: str
    algorithm: str
    key_id: str | None
    expires_at: float | None
    issued_at: float | None
    chain: tuple[ChainLink, ...] = field(default=())

    def actor_fields(self) -> dict[str, Any]:
        """The event ``actor`` fields this token proves."""
        out: dict[str, Any] = {
            "id": self.subject,
            "issuer": self.issuer,
            "principal": self.principal,
            "verified": True,
        }
        if self.chain:
            out["chain"] = [link.as_dict() for link in self.chain]
        return out


@dataclass(slots=True)
class _Issuer:
    config: IssuerConfig
    claims: JWTClaimsRegistry
    algorithms: frozenset[str]
    types: frozenset[str] | None


class TokenVerifier:
    """Verifies compact JWS JWTs from the configured issuers.

    :param issuers: :class:`IssuerConfig` objects (or dicts of their fields).
    :param http_client: client for JWKS/discovery fetches (when ``jwks`` is not given).
    :param jwks: a shared :class:`JWKSCache` (one is created otherwise).
    :param directory: resolves principal claims and ``act`` subjects of issuers that
        name a ``system``; the claim value itself is the principal otherwise.
    :param cache_size: verified results kept (LRU, keyed by SHA-256 of the token).
    :param cache_ttl: a cached result is re-verified after this long (so a key removed
        from the JWKS stops verifying within it), and never outlives ``exp``.
    :param negative_ttl: how long deterministic failures are cached.
    :param clock: wall clock in seconds (tests).
    """

    def __init__(
        self,
        issuers: Iterable[IssuerConfig | Mapping[str, Any]],
        *,
        http_client: httpx.Client | None = None,
        jwks: JWKSCache | None = None,
        directory: Directory | None = None,
        cache_size: int = 10_000,
        cache_ttl: float = 300.0,
        negative_ttl: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._clock = clock
        self._jwks = jwks if jwks is not None else JWKSCache(http_client=http_client)
        self._directory = directory
        self._issuers: dict[str, _Issuer] = {}
        for item in issuers:
            try:
                cfg = item if isinstance(item, IssuerConfig) else IssuerConfig.model_validate(item)
            except ValidationError as exc:
                raise ConfigError(f"invalid issuer config: {exc}") from None
            if cfg.issuer in self._issuers:
                raise ConfigError(f"issuer configured twice: {cfg.issuer!r}")
            self._jwks.register(cfg.issuer, jwks_uri=cfg.jwks_uri, discover=cfg.discovery)
            self._issuers[cfg.issuer] = _Issuer(
                cfg,
                JWTClaimsRegistry(
                    now=self._now_int,
                    leeway=cfg.leeway,
                    iss={"essential": True, "value": cfg.issuer},
                    sub={"essential": True},
                    aud={"essential": True, "values": list(cfg.audiences)},
                    exp={"essential": cfg.require_exp},
                ),
                frozenset(cfg.algorithms),
                frozenset(t.lower() for t in cfg.token_types) if cfg.token_types is not None else None,
            )
        self._cache_size = cache_size
        self._cache_ttl = cache_ttl
        self._negative_ttl = negative_ttl
        self._cache: OrderedDict[str, tuple[float, VerifiedToken | TokenInvalid]] = OrderedDict()
        self._cache_lock = threading.Lock()
        self.cache_hits = 0
        self.cache_misses = 0

    # -- public ------------------------------------------------------------------------

    @property
    def jwks(self) -> JWKSCache:
        return self._jwks

    def issuers(self) -> list[IssuerConfig]:
        return [i.config for i in self._issuers.values()]

    def verify(self, token: str) -> VerifiedToken:
        """Verify ``token``; may fetch keys (blocking) when they are not cached, except
        on an event loop's thread, where a needed fetch is :class:`KeysUnavailable`.

        :raises TokenInvalid: with ``reason`` (401 at the API)
        :raises KeysUnavailable: the issuer's keys cannot be had (503 at the API)
        """
        if not _on_event_loop():
            return self._verify(token, allow_fetch=True)
        try:
            return self._verify(token, allow_fetch=False)
        except KeyFetchRequired:
            raise KeysUnavailable(
                "keys_unavailable", "the issuer's keys are not at hand yet; retry in a few seconds"
            ) from None

    async def averify(self, token: str) -> VerifiedToken:
        """:meth:`verify` for event loops: runs inline when the keys are cached (no
        await), and only moves to a worker thread when a key fetch is needed."""
        try:
            return self._verify(token, allow_fetch=False)
        except KeyFetchRequired:
            return await asyncio.to_thread(self._verify, token, True)

    def prefetch(self) -> dict[str, bool]:
        """Fetch every issuer's keys now (startup); issuer → success."""
        return {iss: self._jwks.refresh(iss) for iss in self._issuers}

    def clear_cache(self) -> None:
        with self._cache_lock:
            self._cache.clear()

    # -- internals ---------------------------------------------------------------------

    def _now_int(self) -> int:
        return int(self._clock())

    def _verify(self, token: str, allow_fetch: bool) -> VerifiedToken:
        if not isinstance(token, str) or not token:
            raise TokenInvalid("malformed", "token is empty or not a string")
        if len(token) > MAX_TOKEN_LENGTH:
            raise TokenInvalid("too_large", f"token longer than {MAX_TOKEN_LENGTH} characters")
        if not token.isascii():
            raise TokenInvalid("malformed", "token is not a compact JWS (non-ASCII characters)")
        digest = hashlib.sha256(token.encode("ascii")).hexdigest()
        now = self._clock()
        with self._cache_lock:
            entry = self._cache.get(digest)
            if entry is not None:
                if now < entry[0]:
                    self._cache.move_to_end(digest)
                    self.cache_hits += 1
                    result = entry[1]
                    if isinstance(result, TokenInvalid):
                        raise TokenInvalid(result.reason, result.detail)
                    return result
                del self._cache[digest]
            self.cache_misses += 1
        try:
            verified = self._verify_uncached(token, digest, now, allow_fetch)
        except TokenInvalid as exc:
            if exc.reason in _STICKY_REASONS and type(exc) is TokenInvalid:
                self._remember(digest, now + self._negative_ttl, exc)
            raise
        until = now + self._cache_ttl
        if verified.expires_at is not None:
            until = min(until, verified.expires_at + self._issuers[verified.issuer].config.leeway)
        self._remember(digest, until, verified)
        return verified

    def _remember(self, digest: str, until: float, value: VerifiedToken | TokenInvalid) -> None:
        with self._cache_lock:
            self._cache[digest] = (until, value)
            self._cache.move_to_end(digest)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)

    def _verify_uncached(self, token: str, digest: str, now: float, allow_fetch: bool) -> VerifiedToken:
        parts = token.split(".")
        if len(parts) == 5:
            raise TokenInvalid("encrypted", "encrypted (JWE) tokens are not accepted")
        if len(parts) != 3 or not _COMPACT.fullmatch(token):
            raise TokenInvalid("malformed", "token is not a compact JWS (header.payload.signature)")
        h_seg, p_seg, s_seg = parts
        header = _b64_json(h_seg, "header")
        alg = _check_header(header)
        claims = _b64_json(p_seg, "payload")

        iss = claims.get("iss")
        if not isinstance(iss, str):
            raise TokenInvalid("untrusted_issuer", "token has no 'iss' claim")
        issuer = self._issuers.get(iss)  # exact string match, no normalisation
        if issuer is None:
            raise TokenInvalid("untrusted_issuer", f"issuer {_clip(iss)!r} is not trusted")
        cfg = issuer.config
        if alg not in issuer.algorithms:
            raise TokenInvalid("alg_not_allowed", f"algorithm {_clip(alg)!r} is not allowed for this issuer")
        if issuer.types is not None:
            typ = header.get("typ")
            if not isinstance(typ, str) or typ.lower() not in issuer.types:
                raise TokenInvalid("bad_type", "token 'typ' header is not an accepted type")
        kid = header.get("kid")

        self._check_signature(cfg.issuer, alg, kid, f"{h_seg}.{p_seg}".encode("ascii"), s_seg, allow_fetch)
        _check_claims(issuer.claims, claims)

        subject: str = claims["sub"]
        principal = self._principal(cfg, claims)
        aud = claims["aud"]
        audience = (aud,) if isinstance(aud, str) else tuple(aud)
        jti = claims.get("jti")
        return VerifiedToken(
            issuer=cfg.issuer,
            subject=subject,
            principal=principal,
            audience=audience,
            claims=MappingProxyType(claims),
            token_id=jti if isinstance(jti, str) and jti else f"sha256:{digest}",
            digest=digest,
            algorithm=alg,
            key_id=kid,
            expires_at=_num(claims.get("exp")),
            issued_at=_num(claims.get("iat")),
            chain=self._chain(cfg, claims),
        )

    def _check_signature(
        self, iss: str, alg: str, kid: str | None, signing_input: bytes, s_seg: str, allow_fetch: bool
    ) -> None:
        try:
            candidates = self._jwks.get_keys(iss, kid, allow_fetch=allow_fetch)
        except JWKSError as exc:
            raise KeysUnavailable("keys_unavailable", exc.detail) from None
        if not candidates:
            raise TokenInvalid("unknown_kid", "no key with this 'kid' in the issuer's key set")
        model = _ALGS[alg]
        usable: list[AsymmetricKey] = []
        for key in candidates:
            key_alg = key.get("alg")
            if key_alg is not None and key_alg != alg:
                continue  # RFC 7517 §4.4: the key is bound to another algorithm
            try:
                model.check_key(key)
            except JoseError:
                continue  # wrong key type or curve for this alg
            usable.append(key)
        if not usable:
            raise TokenInvalid("key_mismatch", f"the issuer's key for this 'kid' cannot be used with {alg}")
        sig = _b64(s_seg)
        if sig is None or not sig:
            raise TokenInvalid("bad_signature", "signature is missing or not base64url")
        for key in usable[:4]:
            try:
                if model.verify(signing_input, sig, key):
                    return
            except (ValueError, TypeError, JoseError):
                continue
        raise TokenInvalid("bad_signature", "signature does not verify with the issuer's key")

    def _principal(self, cfg: IssuerConfig, claims: dict[str, Any]) -> str:
        value = claims.get(cfg.principal_claim)
        if not isinstance(value, str) or not value:
            raise TokenInvalid("principal_missing", f"principal claim {cfg.principal_claim!r} is missing or empty")
        if cfg.principal_claim == "email" and claims.get("email_verified") is False:
            raise TokenInvalid("principal_unverified", "the issuer marks the e-mail claim unverified")
        if self._directory is not None and cfg.system is not None:
            return self._directory.resolve(cfg.system, value) or value
        return value

    def _chain(self, cfg: IssuerConfig, claims: dict[str, Any]) -> tuple[ChainLink, ...]:
        """RFC 8693 §4.1: the outermost ``act`` is the current actor; each nested
        ``act`` acted before it. Returned in that order (current actor first)."""
        links: list[ChainLink] = []
        node = claims.get("act")
        while node is not None:
            if len(links) >= MAX_CHAIN_DEPTH:
                raise TokenInvalid("chain_invalid", f"delegation chain deeper than {MAX_CHAIN_DEPTH}")
            if not isinstance(node, dict):
                raise TokenInvalid("chain_invalid", "'act' claim is not an object")
            sub = node.get("sub")
            if not isinstance(sub, str) or not sub:
                raise TokenInvalid("chain_invalid", "'act' claim without a 'sub'")
            act_iss = node.get("iss")
            if act_iss is not None and not isinstance(act_iss, str):
                raise TokenInvalid("chain_invalid", "'act.iss' is not a string")
            principal = None
            if self._directory is not None and cfg.system is not None and act_iss in (None, cfg.issuer):
                principal = self._directory.resolve(cfg.system, sub)
            links.append(ChainLink(id=sub, issuer=act_iss, principal=principal))
            node = node.get("act")
        return tuple(links)


def _on_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _check_header(header: dict[str, Any]) -> str:
    """RFC 7515 §4 / RFC 8725 §3.1, §3.10 header rules; returns ``alg``."""
    alg = header.get("alg")
    if not isinstance(alg, str) or not alg:
        raise TokenInvalid("malformed", "header has no 'alg'")
    if alg.lower() == "none":
        raise TokenInvalid("alg_none", "unsigned tokens (alg 'none') are never accepted")
    for name in FORBIDDEN_HEADERS:
        if name in header:
            raise TokenInvalid(
                "forbidden_header",
                f"header parameter {name!r} is not accepted: keys come only from the issuer's JWKS",
            )
    if "crit" in header:
        crit = header["crit"]
        names = [_clip(str(c), 40) for c in crit] if isinstance(crit, list) else ["?"]
        raise TokenInvalid("crit_unsupported", f"critical header parameters not understood: {names[:5]}")
    if "b64" in header:
        raise TokenInvalid("forbidden_header", "header parameter 'b64' (RFC 7797) is not accepted in a JWT")
    kid = header.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise TokenInvalid("malformed", "header 'kid' is not a string")
    if alg not in _ALGS:
        raise TokenInvalid("alg_not_allowed", f"algorithm {_clip(alg)!r} is not supported")
    return alg


def _check_claims(registry: JWTClaimsRegistry, claims: dict[str, Any]) -> None:
    try:
        registry.validate(claims)
    except ExpiredTokenError:
        raise TokenInvalid("expired", "token has expired") from None
    except MissingClaimError as exc:
        raise TokenInvalid("missing_claim", f"required claim(s) missing: {exc.claim}") from None
    except JoseError as exc:
        claim = getattr(exc, "claim", "?")
        if claim == "nbf":
            raise TokenInvalid("not_yet_valid", "token is not valid yet (nbf)") from None
        if claim == "iat":
            raise TokenInvalid("issued_in_future", "token was issued in the future (iat)") from None
        if claim == "aud":
            raise TokenInvalid("audience", "token audience does not include an accepted audience") from None
        raise TokenInvalid("invalid_claim", f"claim {_clip(str(claim), 40)!r} is invalid") from None


def _b64(seg: str) -> bytes | None:
    try:
        return base64.urlsafe_b64decode(seg + "=" * (-len(seg) % 4))
    except (binascii.Error, ValueError):
        return None


def _b64_json(seg: str, what: str) -> dict[str, Any]:
    raw = _b64(seg)
    if raw is None:
        raise TokenInvalid("malformed", f"token {what} is not base64url")
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise TokenInvalid("malformed", f"token {what} is not JSON") from None
    if not isinstance(value, dict):
        raise TokenInvalid("malformed", f"token {what} is not a JSON object")
    return value


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def _clip(s: str, n: int = 100) -> str:
    return s if len(s) <= n else s[:n] + "…"
