"""Identity: who wrote and who reads the trail.

``tokens`` holds the API's bearer tokens and roles; ``oidc`` and ``jwks`` verify JWTs
from trusted OpenID Connect issuers; ``directory`` links every system's name for a
person to one principal; ``workload`` authenticates sources and CI pipelines by JWT.
"""

from auditfed.identity.tokens import ROLES, Caller, TokenAuthority, token_digest

__all__ = ["ROLES", "Caller", "TokenAuthority", "token_digest"]
