"""The one error hierarchy of auditfed.

Every error a caller may want to handle derives from :class:`AuditfedError`. The API
turns them into RFC 9457 problem documents, the CLI into a message and an exit code,
using ``status`` and ``title``.
"""

from __future__ import annotations

from typing import Any


class AuditfedError(Exception):
    """Base of every error auditfed raises on purpose."""

    status: int = 500
    title: str = "Internal error"

    def __init__(self, detail: str, **extensions: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extensions = extensions

    def __reduce__(self) -> tuple[Any, ...]:
        # Errors cross process boundaries (ingest workers): keep every attribute, not
        # only the message that Exception's default pickling passes to __init__.
        return _restore, (type(self), self.args, self.__dict__)


def _restore(cls: type[AuditfedError], args: tuple[Any, ...], state: dict[str, Any]) -> AuditfedError:
    error = cls.__new__(cls)
    Exception.__init__(error, *args)
    error.__dict__.update(state)
    return error


class InvalidInput(AuditfedError):
    """A request or record is malformed: bad JSON, wrong type, unknown field."""

    status = 400
    title = "Invalid input"


class InvalidEvent(InvalidInput):
    """An event does not satisfy the event schema; ``errors`` lists path and reason."""

    status = 422
    title = "Invalid event"

    def __init__(self, detail: str, errors: list[dict[str, str]] | None = None) -> None:
        super().__init__(detail)
        self.errors = errors or []


class PayloadTooLarge(InvalidInput):
    status = 413
    title = "Payload too large"


class EventTooLarge(InvalidEvent):
    """One event of a batch is over ``max_event_bytes`` (issue #16): that item is
    rejected with this status; the batch's other events are judged on their own."""

    status = 413
    title = "Payload too large"


class Unauthenticated(AuditfedError):
    status = 401
    title = "Unauthenticated"


class Forbidden(AuditfedError):
    status = 403
    title = "Forbidden"


class NotFound(AuditfedError):
    status = 404
    title = "Not found"


class Gone(NotFound):
    """What was asked for existed but was removed on purpose (entries past retention)."""

    status = 410
    title = "Gone"


class TooManyRequests(AuditfedError):
    """A per-token or server-wide limit on concurrent use is reached (limits, issue 16)."""

    status = 429
    title = "Too many requests"


class Unavailable(AuditfedError):
    """The service cannot take the request now (shutting down, store down, overloaded)."""

    status = 503
    title = "Service unavailable"


class VerificationError(AuditfedError):
    """A proof, signature or stored log does not verify."""

    status = 422
    title = "Verification failed"


class ProofError(VerificationError):
    title = "Invalid proof"


class SignatureError(VerificationError):
    title = "Invalid signature"


class StoreError(AuditfedError):
    status = 500
    title = "Store error"


class ConfigError(AuditfedError):
    status = 500
    title = "Configuration error"


class ListenError(ConfigError):
    """The server cannot listen on its address (in use, not local, not permitted). (demo part)"""
