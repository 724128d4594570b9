"""The HTTP API (DESIGN.md "HTTP API"): FastAPI routes over a :class:`~auditfed.node.Node`.

Errors are RFC 9457 ``application/problem+json`` documents; the OpenAPI description
is served at ``/openapi.json``.
"""

from auditfed.api.app import create_app

__all__ = ["create_app"]
