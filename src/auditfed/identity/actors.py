"""The identity stage of ingest: verified actors and one principal.

For each event: a JWT the producer attached as ``actor.token`` is verified against
the trusted issuers (``oidc``); on success the actor's id, issuer, principal and
delegation chain come from the token and ``actor.verified`` is true; on failure the
event is still kept (losing the record of an action would be worse) with
``actor.verified: false`` and the reason. The token itself is never stored: only its
``jti`` or digest, as ``actor.token_id``. Then the actor (and every link of the
chain) is resolved to a principal through the directory, by the alias namespace of
the event's source.

Server-owned members are the server's: ``verified``, ``verification_error``,
``issuer``, ``principal``, ``token_id`` and ``chain`` are filled only by verification
(or, for ``principal``, by the directory). What a producer writes there is moved to
``actor.claimed`` before any of this (:func:`separate_claims`): kept and shown, never
indexed, matched or exported as the actor's identity. A chain a normaliser built from
a source record (Kubernetes impersonation, CloudTrail session issuer) is relayed as
the source system attested it; the trust in it is the source token's binding, as for
``actor.id``. A verified token replaces the whole actor identity: a chain beside it
comes only from the token (:func:`apply_verified`).
"""

from __future__ import annotations

from typing import Any

from auditfed.errors import InvalidEvent
from auditfed.identity.directory import Directory
from auditfed.identity.oidc import TokenInvalid, TokenVerifier

#: Actor members that only verification (or the server's directory) may fill.
SERVER_OWNED = ("issuer", "principal", "token_id")


def separate_claims(actor: dict[str, Any], position: int, *, relayed_chain: bool = False) -> None:
    """Move a producer's values of server-owned actor members into ``actor.claimed``.

    ``relayed_chain``: the chain was built by a normaliser from a source record, and
    stays. Refuses (422) a member given both in place and in ``claimed`` with two
    different values: one of them would be lost.
    """
    names = SERVER_OWNED if relayed_chain else (*SERVER_OWNED, "chain")
    moved = {name: actor.pop(name) for name in names if name in actor}
    if not moved:
        return
    claimed = actor.setdefault("claimed", {})
    for name, value in moved.items():
        if claimed.setdefault(name, value) != value:
            reason = f"differs from actor.claimed.{name}: send the claim once, as actor.claimed.{name}"
            raise InvalidEvent(f"actor.{name}: {reason}",
                               [{"item": position, "path": f"actor.{name}", "reason": reason}])


def apply_verified(actor: dict[str, Any], proven: dict[str, Any]) -> None:
    """Make ``actor`` the identity a verified credential proves (``proven``: its actor
    fields). Nothing unproven stays beside ``verified: true``: a different producer
    ``id`` and a chain the credential did not carry move to ``actor.claimed``."""
    claimed = actor.get("claimed") or {}
    if actor["id"] != proven["id"]:
        claimed.setdefault("id", actor["id"])
    chain = actor.pop("chain", None)
    if chain is not None and chain != proven.get("chain"):
        claimed.setdefault("chain", chain)
    actor.pop("verification_error", None)
    actor.update(proven)
    if claimed:
        actor["claimed"] = claimed


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
        apply_verified(actor, {**verified.actor_fields(), "token_id": verified.token_id[:512]})

    def _resolve(self, event: dict[str, Any], actor: dict[str, Any]) -> None:
        assert self.directory is not None
        source = event["source"]
        kind, service = source.get("kind", "app"), source.get("service")
        if not actor.get("verified"):  # a principal here came from the verified token
            principal = self.directory.resolve_source(kind, actor["id"], service)
            if principal is not None:
                actor["principal"] = principal
        for link in actor.get("chain", ()):
            if "principal" not in link:
                principal = self.directory.resolve_source(kind, link["id"], service)
                if principal is not None:
                    link["principal"] = principal
