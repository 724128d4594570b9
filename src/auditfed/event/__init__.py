"""The canonical audit event: its model, validation and canonical bytes.

One event answers who / what / when / where / why and how it links to others
(DESIGN.md, "The event"). :func:`validate_event` checks a producer's JSON object and
returns the normalised dict; :func:`canonical_bytes` gives the RFC 8785 (JCS) bytes
that become the leaf data of the Merkle log.
"""

from auditfed.event.canonical import canonical_bytes, canonical_event_bytes
from auditfed.event.model import (
    OUTCOMES,
    EventInput,
    event_json_schema,
    format_time,
    new_event_id,
    normalise_time,
    validate_event,
    validate_events,
)

__all__ = [
    "OUTCOMES",
    "EventInput",
    "canonical_bytes",
    "canonical_event_bytes",
    "event_json_schema",
    "format_time",
    "new_event_id",
    "normalise_time",
    "validate_event",
    "validate_events",
]
