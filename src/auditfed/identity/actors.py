"""The identity stage of ingest: verified actors and one principal.

For each event: a JWT the producer attached as ``actor.token`` is verified against
the trusted issuers (``oidc``); on success the actor's id, issuer, principal and
delegation chain come from the token and ``actor.verified`` is true; on failure the
event is still kept (losing the record of an action would be worse) with
``actor.verified: false`` and the reason. The token itself is never stored: only its
``jti`` or digest, as ``actor.token_id``. Then the actor (and every link of the
chain) is resolved to a principal through the directory, by the alias namespace of
the event's source.
"""

from __future__ import annotations

from typing import Any

from auditfed.identity.directory import Directory
from auditfed.identity.oidc import TokenInvalid, TokenVerifier


class ActorResolver:
    """An ingest enricher: ``event -> event`` with the actor verified and resolved."""

    def __init__(self, verifier: TokenVerifier | None, directory: Directory | None) -> None:
        self.verifier = verifier
        self.directory = directory

    def __call__(self, event: dict[str, Any]) -> dict[str, Any]:
        actor = event["actor"]
        token = actor.pop("token", None)
        if token is not None:
            self._verify(actor, token)
        if self.directory is not None:
            self._resolve(event, actor)
        return event

    def _verify(self, actor: dict[str, Any], token: str) -> None:
        if self.verifier is None:
            actor["verified"] = False
            actor["verification_error"] = "no trusted issuer is configured"
            return
        try:
            verified = self.verifier.verify(token)
        except TokenInvalid as exc:
            actor["verified"] = False
            actor["verification_error"] = f"{exc.reason}: {exc.detail}"[:512]
            return
        actor.update(verified.actor_fields())
        actor["token_id"] = verified.token_id[:512]
        actor.pop("verification_error", None)

    def _resolve(self, event: dict[str, Any], actor: dict[str, Any]) -> None:
        assert self.directory is not None
        source = event["source"]
        kind, service = source.get("kind", "app"), source.get("service")
        if "principal" not in actor or not actor.get("verified"):
            principal = self.directory.resolve_source(kind, actor["id"], service)
            if principal is not None:
                actor["principal"] = principal
        for link in actor.get("chain", ()):
            if "principal" not in link:
                principal = self.directory.resolve_source(kind, link["id"], service)
                if principal is not None:
                    link["principal"] = principal
