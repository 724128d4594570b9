"""API bearer tokens and roles.

A token is ``afd_`` followed by 43 base64url characters (256 random bits). Only its
SHA-256 digest is stored; the token itself is shown once, when it is created.

Roles (DESIGN.md "Auth"): ``source`` writes events, only as its own service (and
environment, when the token names one); ``auditor`` reads, queries, proves and
exports; ``admin`` manages tokens, rules and config and may do what an auditor does.

An ``auditor`` token may be scoped to one service and/or one environment (the same
``--service`` / ``--environment`` binding a source token has): it then sees only
events of that scope, in every endpoint.

A source may also authenticate with a JWT from a trusted issuer (workload identity:
a Kubernetes service-account token, a SPIFFE JWT-SVID, a GitHub Actions OIDC token),
mapped to a service by configuration (:mod:`auditfed.identity.workload`).

A running server caches what it learnt about a token for ``cache_seconds`` (1 s by
default), so a token created or revoked by ``auditfed token create|revoke`` on the
same data dir takes effect within that time, while a flood of requests does not
turn into a flood of store reads.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from auditfed.errors import Forbidden, InvalidInput, Unauthenticated
from auditfed.event.model import format_time
from auditfed.identity.workload import WorkloadAuthenticator, WorkloadIdentity
from auditfed.store.base import Store, TokenRecord

ROLES = ("source", "auditor", "admin", "node")  # node: a federation node, bound to its name
_TOKEN_SHAPE = re.compile(r"^afd_[A-Za-z0-9_-]{43}$")
_CACHE_LIMIT = 100_000


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling: the role and binding of the token they presented."""

    token_id: str
    role: str
    service: str | None = None
    environment: str | None = None
    #: For a source authenticated by JWT: the workload (and pipeline) it proved to be.
    workload: WorkloadIdentity | None = None

    def require(self, *roles: str) -> None:
        if self.role not in roles:
            raise Forbidden(f"this needs the {' or '.join(roles)} role; the token is {self.role}")

    @property
    def scoped(self) -> bool:
        """A reader that may see only part of the trail."""
        return self.role == "auditor" and (self.service is not None or self.environment is not None)

    def may_see(self, event: dict[str, Any]) -> bool:
        source = event.get("source", {})
        return (self.service is None or source.get("service") == self.service) and (
            self.environment is None or source.get("environment") == self.environment
        )


def _bearer(header: str | None) -> str:
    if not header:
        raise Unauthenticated("no bearer token: send Authorization: Bearer <token>")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Unauthenticated("the Authorization header must be: Bearer <token>")
    return token.strip()


def _workload_caller(identity: WorkloadIdentity) -> Caller:
    return Caller(identity.token_id[:64], "source", identity.service, identity.environment, identity)


def token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class TokenAuthority:
    """Creates, checks, lists and revokes tokens held in a :class:`Store`."""

    def __init__(
        self,
        store: Store,
        cache_seconds: float = 1.0,
        workloads: WorkloadAuthenticator | None = None,
    ) -> None:
        self.store = store
        self.workloads = workloads
        self.cache_seconds = cache_seconds
        self._cache: dict[bytes, tuple[float, TokenRecord | None]] = {}
        self._lock = threading.Lock()

    def create(
        self,
        role: str,
        *,
        service: str | None = None,
        environment: str | None = None,
        description: str | None = None,
        expires_at: datetime | None = None,
    ) -> tuple[str, TokenRecord]:
        if role not in ROLES:
            raise InvalidInput(f"unknown role {role!r}: use one of {', '.join(ROLES)}")
        if role == "source" and not service:
            raise InvalidInput("a source token must name its service (--service)")
        if role == "node" and not service:
            raise InvalidInput("a node token must name its node (service = node name)")
        token = "afd_" + secrets.token_urlsafe(32)
        digest = token_digest(token)
        record = TokenRecord(
            token_id=digest[:6].hex(),
            role=role,
            service=service,
            environment=environment,
            description=description,
            created_at=format_time(datetime.now(UTC)),
            expires_at=format_time(expires_at) if expires_at else None,
            revoked_at=None,
        )
        self.store.add_token(digest, record)
        return token, record

    def authenticate(self, header: str | None) -> Caller:
        """The caller behind an ``Authorization`` header value; 401 if there is none."""
        token = _bearer(header)
        if self._is_workload(token):
            assert self.workloads is not None
            return _workload_caller(self.workloads.authenticate(token))
        return self._api_token(token)

    async def aauthenticate(self, header: str | None) -> Caller:
        """:meth:`authenticate` for event loops: a workload JWT whose issuer's keys must
        be fetched is verified in a thread, never on the loop."""
        token = _bearer(header)
        if self._is_workload(token):
            assert self.workloads is not None
            return _workload_caller(await self.workloads.aauthenticate(token))
        return self._api_token(token)

    def _is_workload(self, token: str) -> bool:
        return self.workloads is not None and token.count(".") == 2 and not token.startswith("afd_")

    def _api_token(self, token: str) -> Caller:
        if not _TOKEN_SHAPE.match(token):
            raise Unauthenticated("the bearer token is malformed")
        record = self._lookup(token_digest(token))
        if record is None:
            raise Unauthenticated("the bearer token is not known")
        now = format_time(datetime.now(UTC))
        if record.revoked_at is not None:
            raise Unauthenticated("the bearer token was revoked")
        if record.expires_at is not None and record.expires_at <= now:
            raise Unauthenticated("the bearer token has expired")
        return Caller(record.token_id, record.role, record.service, record.environment)

    def _lookup(self, digest: bytes) -> TokenRecord | None:
        now = time.monotonic()
        cached = self._cache.get(digest)
        if cached is not None and now - cached[0] < self.cache_seconds:
            return cached[1]
        record = self.store.find_token(digest)
        with self._lock:
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            self._cache[digest] = (now, record)
        return record

    def list(self) -> list[TokenRecord]:
        return self.store.list_tokens()

    def revoke(self, token_id: str) -> TokenRecord | None:
        """Revoke an active token: its record, now revoked (``None``: no such active token)."""
        if not self.store.revoke_token(token_id, format_time(datetime.now(UTC))):
            return None
        return next((r for r in self.store.list_tokens() if r.token_id == token_id), None)
