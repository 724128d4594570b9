"""Workload and pipeline identity: sources that authenticate with a JWT.

Besides static API tokens, a source may present a JWT from a trusted issuer:

* a Kubernetes service-account token (projected, audience-bound; ``sub`` is
  ``system:serviceaccount:<namespace>:<name>``),
* a SPIFFE JWT-SVID (``sub`` is the SPIFFE ID ``spiffe://<trust domain>/<path>``;
  SPIFFE JWT-SVID spec — the issuer must set ``iss`` so it can be trusted here),
* a GitHub Actions OIDC token (issuer ``https://token.actions.githubusercontent.com``,
  ``sub`` like ``repo:<org>/<repo>:ref:<ref>``), which makes the *pipeline* the actor,
  with the person who triggered it (its ``actor`` claim) resolved through the
  directory and recorded as the delegation chain.

The token is verified by :class:`auditfed.identity.oidc.TokenVerifier` (use a verifier
whose issuers/audiences are those meant for sources, distinct from user tokens), then
mapped to a service by the first matching rule of the ``[[workload.mappings]]``
config::

    [[workload.mappings]]
    issuer = "https://kubernetes.default.svc.cluster.local"
    subject = "system:serviceaccount:{namespace}:{name}"
    service = "{namespace}-{name}"
    environment = "prod-eu"

    [[workload.mappings]]
    issuer = "https://token.actions.githubusercontent.com"
    subject = "repo:corp/{repo}:**"
    claims = { repository_owner = "corp" }
    service = "{repo}"
    environment = "ci"

``subject`` is a :class:`auditfed.identity.directory.Pattern`; ``claims`` are exact
conditions on top-level claims; ``service``/``environment`` are templates over the
pattern's captures and the token's top-level string claims. A GitHub Actions mapping
must pin the repository owner (subject prefix ``repo:<owner>/`` or a
``repository_owner``/``repository_owner_id``/``repository``/``enterprise`` claim
condition): any GitHub repository can mint tokens from that issuer.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from auditfed.errors import ConfigError, Forbidden
from auditfed.identity.directory import Directory, Pattern, render_template
from auditfed.identity.oidc import ChainLink, TokenVerifier, VerifiedToken

__all__ = [
    "GITHUB_ACTIONS_ISSUER",
    "WorkloadAuthenticator",
    "WorkloadIdentity",
    "WorkloadMapping",
    "WorkloadNotMapped",
]

GITHUB_ACTIONS_ISSUER = "https://token.actions.githubusercontent.com"
GITHUB_ACTOR_ISSUER = "https://github.com"
_GITHUB_ATTRIBUTES = (
    "repository", "repository_owner", "repository_id", "repository_owner_id", "ref", "ref_type",
    "sha", "workflow", "workflow_ref", "job_workflow_ref", "run_id", "run_number", "run_attempt",
    "event_name", "environment", "runner_environment", "triggering_actor", "actor_id",
)  # fmt: skip
_GITHUB_OWNER_CLAIMS = ("repository_owner", "repository_owner_id", "repository", "enterprise")


class WorkloadNotMapped(Forbidden):
    """The token is valid but no mapping makes it a known source (403)."""

    title = "Workload not authorised"


class WorkloadMapping(BaseModel):
    """One ``[[workload.mappings]]`` rule."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    issuer: str = Field(min_length=1)
    subject: str = Field("**", min_length=1, description="pattern over `sub`")
    claims: dict[str, str | int | bool] = Field(default_factory=dict)
    service: str = Field(min_length=1, description="template")
    environment: str | None = Field(None, description="template")
    kind: Literal["workload", "github-actions"] | None = None

    def effective_kind(self) -> str:
        if self.kind is not None:
            return self.kind
        return "github-actions" if self.issuer.startswith(GITHUB_ACTIONS_ISSUER) else "workload"


@dataclass(frozen=True, slots=True)
class WorkloadIdentity:
    """Who a source is: the service it writes as, and for CI the pipeline and the
    person behind it (``chain``, current actor first)."""

    service: str
    environment: str | None
    pipeline: str | None
    chain: tuple[ChainLink, ...]
    issuer: str
    subject: str
    principal: str
    token_id: str
    expires_at: float | None
    attributes: Mapping[str, Any] = field(default_factory=dict)

    def actor_fields(self) -> dict[str, Any]:
        """The event ``actor`` this workload is (pipelines: ``type`` pipeline)."""
        out: dict[str, Any] = {
            "id": self.pipeline or self.subject,
            "type": "pipeline" if self.pipeline else "service",
            "issuer": self.issuer,
            "principal": self.principal,
            "verified": True,
        }
        if self.chain:
            out["chain"] = [link.as_dict() for link in self.chain]
        return out


@dataclass(frozen=True, slots=True)
class _Compiled:
    mapping: WorkloadMapping
    subject: Pattern
    github: bool


class WorkloadAuthenticator:
    """Verifies a workload JWT and maps it to a :class:`WorkloadIdentity`."""

    def __init__(
        self,
        verifier: TokenVerifier,
        mappings: Iterable[WorkloadMapping | Mapping[str, Any]],
        directory: Directory | None = None,
    ) -> None:
        self._verifier = verifier
        self._directory = directory
        trusted = {cfg.issuer for cfg in verifier.issuers()}
        self._mappings: list[_Compiled] = []
        for item in mappings:
            try:
                m = item if isinstance(item, WorkloadMapping) else WorkloadMapping.model_validate(item)
            except ValidationError as exc:
                raise ConfigError(f"invalid workload mapping: {exc}") from None
            if m.issuer not in trusted:
                raise ConfigError(f"workload mapping names an untrusted issuer: {m.issuer!r}")
            github = m.effective_kind() == "github-actions"
            if github and not _pins_owner(m):
                raise ConfigError(
                    f"GitHub Actions mapping {m.subject!r} must pin the repository owner "
                    "(subject 'repo:<owner>/...' or a repository_owner/repository claim)"
                )
            self._mappings.append(_Compiled(m, Pattern(m.subject), github))

    def authenticate(self, token: str) -> WorkloadIdentity:
        """Verify ``token`` (may fetch keys) and map it.

        :raises TokenInvalid: the token does not verify (401)
        :raises WorkloadNotMapped: valid, but no mapping accepts it (403)
        """
        return self.identify(self._verifier.verify(token))

    async def aauthenticate(self, token: str) -> WorkloadIdentity:
        """:meth:`authenticate` for event loops (no await when keys are cached)."""
        return self.identify(await self._verifier.averify(token))

    def identify(self, verified: VerifiedToken) -> WorkloadIdentity:
        """Map an already verified token to a workload identity."""
        claims = verified.claims
        for c in self._mappings:
            m = c.mapping
            if m.issuer != verified.issuer:
                continue
            caps = c.subject.match(verified.subject)
            if caps is None:
                continue
            if any(claims.get(k) != v for k, v in m.claims.items()):
                continue
            values: dict[str, Any] = {k: v for k, v in claims.items() if isinstance(v, str) and not isinstance(v, bool)}
            values.update(caps)
            try:
                service = render_template(m.service, values)
                environment = render_template(m.environment, values) if m.environment else None
            except KeyError:
                continue  # the template needs a claim this token lacks
            if c.github:
                return self._github(verified, service, environment)
            return WorkloadIdentity(
                service=service,
                environment=environment,
                pipeline=None,
                chain=verified.chain,
                issuer=verified.issuer,
                subject=verified.subject,
                principal=verified.principal,
                token_id=verified.token_id,
                expires_at=verified.expires_at,
            )
        raise WorkloadNotMapped("the token is valid but no workload mapping accepts its issuer and subject")

    def _github(self, verified: VerifiedToken, service: str, environment: str | None) -> WorkloadIdentity:
        claims = verified.claims
        chain = list(verified.chain)
        actor = claims.get("actor")
        if isinstance(actor, str) and actor:
            principal = self._directory.resolve("github", actor) if self._directory else None
            chain.append(ChainLink(id=actor, issuer=GITHUB_ACTOR_ISSUER, type="user", principal=principal))
        attributes = {k: claims[k] for k in _GITHUB_ATTRIBUTES if k in claims}
        return WorkloadIdentity(
            service=service,
            environment=environment,
            pipeline=verified.subject,
            chain=tuple(chain),
            issuer=verified.issuer,
            subject=verified.subject,
            principal=verified.subject,
            token_id=verified.token_id,
            expires_at=verified.expires_at,
            attributes=attributes,
        )


def _pins_owner(m: WorkloadMapping) -> bool:
    if any(k in m.claims for k in _GITHUB_OWNER_CLAIMS):
        return True
    if not m.subject.startswith("repo:"):
        return False
    owner, slash, _ = m.subject[5:].partition("/")
    return bool(slash and owner) and not any(ch in owner for ch in "*{}")
