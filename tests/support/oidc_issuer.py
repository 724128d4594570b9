"""A small, real OpenID Connect issuer for tests, served over HTTP on loopback.

It publishes an OIDC Discovery 1.0 document and a JWKS (RFC 7517) with an RSA
(RS256), an EC P-256 (ES256) and an Ed25519 (EdDSA) key, mints tokens with any claims,
headers and keys — including deliberately broken ones (``alg: none``, HS256 keyed with
the RSA public key, embedded ``jwk``, unknown ``crit``) — rotates keys, counts the
JWKS fetches it serves, can be switched "down" (HTTP 503 or a dropped connection)
and lets tests set the ``Cache-Control`` header.

    with OIDCIssuer() as idp:
        token = idp.mint({"sub": "alice"}, alg="ES256")
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import socket
import threading
import time
import uuid
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

from cryptography.hazmat.primitives import serialization
from joserfc.jwk import ECKey, OKPKey, RSAKey
from joserfc.jws import JWSRegistry

Key = RSAKey | ECKey | OKPKey
DownMode = Literal["503", "close"]

_ALG_FOR_KTY = {"RSA": "RS256", "EC": "ES256", "OKP": "EdDSA"}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _json_seg(obj: Mapping[str, Any]) -> str:
    return b64url(json.dumps(obj, separators=(",", ":")).encode())


def generate_key(kty: str, kid: str | None = None) -> Key:
    params = {"kid": kid or f"{kty.lower()}-{uuid.uuid4().hex[:8]}", "use": "sig"}
    if kty == "RSA":
        return RSAKey.generate_key(2048, parameters=params)
    if kty == "EC":
        return ECKey.generate_key("P-256", parameters=params)
    if kty == "OKP":
        return OKPKey.generate_key("Ed25519", parameters=params)
    raise ValueError(kty)


class OIDCIssuer:
    """Threaded HTTP OIDC issuer on 127.0.0.1 (ephemeral port)."""

    def __init__(self, path: str = "", *, audience: str = "auditfed") -> None:
        self.path = path.rstrip("/")
        self.audience = audience
        self.keys: dict[str, Key] = {}  # published keys by kid (private halves kept here)
        self.signing: dict[str, Key] = {}  # current signing key per kty
        for kty in ("RSA", "EC", "OKP"):
            self.add_key(kty)
        self.extra_jwks: list[dict[str, Any]] = []  # raw JWK dicts published as-is
        self.down: DownMode | None = None
        self.cache_control: str | None = None
        self.jwks_delay = 0.0
        #: When set, a JWKS request waits (up to 60 s) until the event is set: a slow provider.
        self.jwks_gate: threading.Event | None = None
        self.jwks_fetches = 0
        self.discovery_fetches = 0
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> OIDCIssuer:
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                issuer._handle(self)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> OIDCIssuer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None, "issuer not started"
        return self._server.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def issuer(self) -> str:
        return self.base_url + self.path

    @property
    def jwks_uri(self) -> str:
        return self.issuer + "/jwks"

    def toml(self, principal_claim: str | None = None) -> str:
        """This issuer as an ``[[issuers]]`` table of an auditfed config."""
        table = f'[[issuers]]\nissuer = "{self.issuer}"\njwks_uri = "{self.jwks_uri}"\naudiences = ["auditfed"]\n'
        return table + (f'principal_claim = "{principal_claim}"\n' if principal_claim else "")

    def workload_toml(self) -> str:
        """A ``[[workloads]]`` table: this issuer's payments service accounts are sources."""
        return (f'[[workloads]]\nissuer = "{self.issuer}"\n'
                'subject = "system:serviceaccount:payments:{name}"\nservice = "payments-{name}"\n')

    @property
    def discovery_url(self) -> str:
        return self.issuer + "/.well-known/openid-configuration"

    # -- keys --------------------------------------------------------------------------

    def add_key(self, kty: str, kid: str | None = None, *, sign: bool = True) -> Key:
        key = generate_key(kty, kid)
        assert key.kid is not None
        self.keys[key.kid] = key
        if sign:
            self.signing[kty] = key
        return key

    def rotate(self, kty: str = "RSA", *, retire_old: bool = True) -> Key:
        """New signing key for ``kty``; the old one is unpublished unless ``retire_old``
        is false."""
        old = self.signing.get(kty)
        new = self.add_key(kty)
        if retire_old and old is not None and old.kid is not None:
            self.keys.pop(old.kid, None)
        return new

    def jwks(self) -> dict[str, Any]:
        keys = [k.as_dict(private=False) for k in self.keys.values()]
        return {"keys": keys + list(self.extra_jwks)}

    def rsa_public_pem(self) -> bytes:
        pub = self.signing["RSA"].raw_value.public_key()
        return pub.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)

    # -- tokens ------------------------------------------------------------------------

    def claims(self, overrides: Mapping[str, Any] | None = None, *, ttl: int = 300) -> dict[str, Any]:
        now = int(time.time())
        base: dict[str, Any] = {
            "iss": self.issuer,
            "sub": "alice",
            "aud": self.audience,
            "iat": now,
            "nbf": now,
            "exp": now + ttl,
            "jti": uuid.uuid4().hex,
        }
        for k, v in (overrides or {}).items():
            if v is None:
                base.pop(k, None)  # None removes a default claim
            else:
                base[k] = v
        return base

    def mint(
        self,
        claims: Mapping[str, Any] | None = None,
        *,
        alg: str | None = None,
        kty: str | None = None,
        key: Key | None = None,
        headers: Mapping[str, Any] | None = None,
        ttl: int = 300,
        kid: str | Literal[False] | None = None,
    ) -> str:
        """Sign a token. Defaults: RS256 with the current RSA key, standard claims
        (``None`` in ``claims`` removes one). ``kid=False`` omits the kid header."""
        if key is None:
            if kty is None:
                kty = {"ES256": "EC", "EdDSA": "OKP", "Ed25519": "OKP"}.get(alg or "RS256", "RSA")
            key = self.signing[kty]
        alg = alg or _ALG_FOR_KTY[key.key_type]
        header: dict[str, Any] = {"typ": "JWT", "alg": alg}
        if kid is not False:
            header["kid"] = kid if kid is not None else key.kid
        header.update(headers or {})
        return self.sign_raw(header, self.claims(claims, ttl=ttl), key)

    @staticmethod
    def sign_raw(header: Mapping[str, Any], claims: Mapping[str, Any], key: Key | bytes | None) -> str:
        """Sign exactly ``header``/``claims`` with no checks (for hostile tokens).
        ``alg: none`` gives an empty signature; an ``HS*`` alg with ``bytes`` key is
        HMAC keyed with those bytes (e.g. the RSA public key PEM)."""
        signing_input = f"{_json_seg(header)}.{_json_seg(claims)}".encode()
        alg = header["alg"]
        if alg.lower() == "none":
            sig = b""
        elif alg.startswith("HS"):
            assert isinstance(key, bytes)
            sig = hmac.new(key, signing_input, getattr(hashlib, "sha" + alg[2:])).digest()
        else:
            assert key is not None and not isinstance(key, bytes)
            sig = JWSRegistry.algorithms[alg].sign(signing_input, key)
        return signing_input.decode() + "." + b64url(sig)

    # -- HTTP --------------------------------------------------------------------------

    def discovery(self) -> dict[str, Any]:
        return {
            "issuer": self.issuer,
            "jwks_uri": self.jwks_uri,
            "authorization_endpoint": self.issuer + "/authorize",
            "token_endpoint": self.issuer + "/token",
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256", "ES256", "EdDSA"],
        }

    def _handle(self, req: BaseHTTPRequestHandler) -> None:
        path = req.path.split("?", 1)[0]
        if path == self.path + "/jwks":
            with self._lock:
                self.jwks_fetches += 1
            if self.jwks_delay:
                time.sleep(self.jwks_delay)
            if self.jwks_gate is not None:
                self.jwks_gate.wait(60)
            body: dict[str, Any] | None = None if self.down else self.jwks()
        elif path == self.path + "/.well-known/openid-configuration":
            with self._lock:
                self.discovery_fetches += 1
            body = None if self.down else self.discovery()
        else:
            self._send(req, 404, {"error": "not found"})
            return
        if self.down == "close":
            with contextlib.suppress(OSError):
                req.connection.shutdown(socket.SHUT_RDWR)
            req.close_connection = True
            return
        if body is None:
            self._send(req, 503, {"error": "down"})
            return
        self._send(req, 200, body, self.cache_control)

    @staticmethod
    def _send(req: BaseHTTPRequestHandler, status: int, body: Any, cache_control: str | None = None) -> None:
        data = json.dumps(body).encode()
        req.send_response(status)
        req.send_header("Content-Type", "application/json")
        req.send_header("Content-Length", str(len(data)))
        if cache_control:
            req.send_header("Cache-Control", cache_control)
        req.end_headers()
        req.wfile.write(data)


class FakeClock:
    """A monotonic clock the tests move by hand (JWKS TTL and cooldowns)."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds
