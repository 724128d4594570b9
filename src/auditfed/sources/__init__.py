"""Sources: decode the formats that systems already emit into auditfed events.

One entry point for the HTTP layer, :func:`decode`, turns a request body in one of the
supported formats into a :class:`Decoded` (per record: a normalised event dict ready
for :func:`auditfed.event.validate_event`, or a :class:`RecordError`). Formats and the
specs they follow (one module each):

* ``otlp`` — OpenTelemetry OTLP/HTTP logs, protobuf and JSON (:mod:`.otlp`)
* ``k8s-audit`` — Kubernetes ``audit.k8s.io/v1`` events (:mod:`.k8s`)
* ``cloudtrail`` — AWS CloudTrail records (:mod:`.cloudtrail`)
* ``pgaudit`` — pgaudit in PostgreSQL stderr logs and ``jsonlog`` (:mod:`.pgaudit`)
* ``cloudevents`` — CloudEvents 1.0 HTTP binding (:mod:`.cloudevents`)
* ``github-audit`` — GitHub audit log export/stream (:mod:`.github`)
* ``okta`` — Okta System Log (:mod:`.okta`)

Also here: :class:`Redactor` (JSON-path redaction applied before events are hashed into
the log), :mod:`.secrets` (secrets recognised by value in any string, applied to every
prepared event), :func:`to_ocsf` (the OCSF view of an event) and :class:`Collector` (the file
follower behind ``auditfed collect``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from auditfed.errors import InvalidInput
from auditfed.sources import cloudevents, cloudtrail, github, k8s, okta, otlp, pgaudit
from auditfed.sources.base import MAX_RECORDS, Decoded, RecordError, UnsupportedContentType
from auditfed.sources.collector import Collector
from auditfed.sources.ocsf import to_ocsf
from auditfed.sources.redaction import Redactor, Rule

_Decoder = Callable[[bytes, str | None, Mapping[str, str], Mapping[str, Any] | None], Decoded]

DECODERS: dict[str, _Decoder] = {
    "otlp": otlp.decode,
    "k8s-audit": k8s.decode,
    "cloudtrail": cloudtrail.decode,
    "pgaudit": pgaudit.decode,
    "cloudevents": cloudevents.decode,
    "github-audit": github.decode,
    "okta": okta.decode,
}
#: Other names accepted for a format (CLI ``--format k8s``, ...).
ALIASES = {"k8s": "k8s-audit", "kubernetes": "k8s-audit", "github": "github-audit",
           "otel": "otlp", "otlp-logs": "otlp", "postgresql": "pgaudit"}
FORMATS = tuple(DECODERS)


def decode(
    format: str,
    body: bytes,
    content_type: str | None,
    headers: Mapping[str, str],
    *,
    options: Mapping[str, Any] | None = None,
    max_records: int | None = None,
) -> Decoded:
    """Decode one request body of ``format`` into per-record events or errors.

    ``headers`` are the request headers (any case; CloudEvents binary mode reads
    ``ce-*``). ``options`` carries per-source settings: ``log_line_prefix`` /
    ``prefix_regex`` / ``skip_non_audit`` (pgaudit; also as ``X-Pgaudit-*`` headers),
    ``cluster`` (k8s-audit), ``service`` (a default ``source.service``). Decoding stops
    with :class:`~auditfed.errors.PayloadTooLarge` after ``max_records`` records.

    Raises :class:`InvalidInput` when the body cannot be read at all
    (:class:`UnsupportedContentType`, a 415, for a media type the format does not take);
    per-record problems are :class:`RecordError` items.
    """
    name = ALIASES.get(format, format)
    decoder = DECODERS.get(name)
    if decoder is None:
        raise InvalidInput(
            f"unknown source format {format!r}; known: {', '.join(FORMATS)}"
        )
    lowered = {k.lower(): v for k, v in headers.items()}
    token = MAX_RECORDS.set(max_records)
    try:
        return decoder(body, content_type, lowered, options)
    finally:
        MAX_RECORDS.reset(token)


__all__ = [
    "DECODERS",
    "FORMATS",
    "Collector",
    "Decoded",
    "RecordError",
    "Redactor",
    "Rule",
    "UnsupportedContentType",
    "decode",
    "to_ocsf",
]
