"""Sources over HTTP: ``POST /v1/logs`` (OTLP/HTTP logs) and ``POST /v1/ingest/{format}``.

Both take a body in a format that systems already emit, decode it with
:func:`auditfed.sources.decode` (one normalised event or one error per source record)
and hand the events to the same pipeline as ``POST /v1/events``
(:mod:`auditfed.ingest.pipeline`, then the sequencer: validate, bind to the caller,
identity, redaction, canonical bytes, group commit). The answer comes once every
accepted event is durable. A record that does not decode, or whose event the pipeline
refuses, is rejected on its own; the good records of the request are kept. Nothing
half-parsed is stored: a record is either a whole event or an error.

Auth, limits and encodings are those of ``/v1/events``: a ``source`` or ``admin``
token, ``max_body_bytes`` (after gzip inflation) and ``max_events_per_request``.

``POST /v1/logs`` follows the OTLP/HTTP specification (OTLP 1.x, "OTLP/HTTP"):
``application/x-protobuf`` or ``application/json`` (415 otherwise); gzip via
``Content-Encoding``; the 200 answer is an ``ExportLogsServiceResponse`` in the
request's encoding whose ``partial_success`` counts the rejected records (decode
errors and pipeline refusals) and says why; failures carry a ``google.rpc.Status``
(protobuf requests) or a problem document that also holds the Status ``code`` and
``message`` (JSON requests); 429 or 503 with ``Retry-After`` when the node is
overloaded (more than :func:`max_pending` events wait for the log's writer) or
shutting down, which OTLP exporters retry.

``POST /v1/ingest/{format}`` (``k8s-audit``, ``cloudtrail``, ``pgaudit``,
``cloudevents``, ``github-audit``, ``okta``) answers like ``/v1/events``:
``{"format", "accepted", "duplicates", "rejected", "skipped", "results": [{"record",
"id", "index", "status", "error"}]}`` where ``record`` is the record's position in the
body (array index, or 0-based line for NDJSON and text logs) and ``skipped`` counts
records deliberately not turned into events (earlier Kubernetes audit stages, non-audit
PostgreSQL lines with ``X-Pgaudit-Skip-Non-Audit: true``). A 422 problem when no record
was accepted. A body that is itself a gzip file (a CloudTrail ``.json.gz`` object) is
inflated too. Decoder options come as headers (``X-Pgaudit-Log-Line-Prefix``,
``X-Pgaudit-Prefix-Regex``, ``X-Pgaudit-Skip-Non-Audit``, ``X-Auditfed-K8s-Cluster``) or
as query parameters (``log_line_prefix``, ``prefix_regex``, ``skip_non_audit``,
``cluster``; these win), e.g. ``?log_line_prefix=%25m%20%5B%25p%5D%20`` for a prefix
with the trailing space a header value cannot hold. Both prefix forms run on RE2
(linear time); a ``prefix_regex`` RE2 cannot run (backreferences, lookaround) is a 400
naming the parameter.

**Source binding.** The caller's token is the authority on ``source`` (as for
``/v1/events``), but a normaliser's service name is not a producer's claim:

* ``/v1/ingest/*``: the decoders name a default service (``kubernetes``,
  ``aws.iam``, ``postgresql``, the CloudEvents ``source``, ``github``, ``okta``). With
  a ``source`` token bound to a service, the token's service is written into
  ``source.service`` and the normaliser's name, when it differs, is kept as the
  attribute ``origin.service`` (so ``aws.iam`` stays searchable and reaches the OCSF
  ``api.service``). With an ``admin`` token (or a source token without a service) the
  normaliser's name is ``source.service``.
* ``/v1/logs``: the resource attribute ``service.name`` *is* the producer's claim.
  Records without one take the token's service; a record whose ``service.name``
  differs from the token's service makes the whole request 403, and nothing of it is
  stored — as an event claiming another service does on ``/v1/events``. The same holds
  for ``deployment.environment.name`` against a token bound to an environment.
"""

from __future__ import annotations

from fastapi import APIRouter, Path, Request
from starlette.responses import Response

from auditfed.api.deps import WRITERS, authorise_async, node_of
from auditfed.api.ingest_routes import Ingested, answer, prepare_body, sequence_batch
from auditfed.api.problems import BODY_PROBLEMS, problem_for
from auditfed.errors import AuditfedError, NotFound, Unavailable
from auditfed.node import Node
from auditfed.sources import ALIASES, DECODERS, Decoded, otlp
from auditfed.sources.base import UnsupportedContentType, media_type

router = APIRouter(tags=["sources"])

#: Formats of ``/v1/ingest/{format}`` (OTLP has its own endpoint, ``/v1/logs``).
INGEST_FORMATS = tuple(name for name in DECODERS if name != "otlp")
INGEST_ALIASES = tuple(alias for alias, name in ALIASES.items() if name in INGEST_FORMATS)
#: Decoder options a request may give as query parameters (a ``log_line_prefix`` often
#: ends in a space, which an HTTP header value cannot carry).
QUERY_OPTIONS = ("log_line_prefix", "prefix_regex", "skip_non_audit", "cluster")


class Overloaded(Unavailable):
    """Too much waits for the log's writer: retry later (429 + Retry-After)."""

    status = 429
    title = "Too many requests"


def max_pending(node: Node) -> int:
    """Events that may wait for a commit before new source requests get 429."""
    return max(5 * node.settings.max_commit_events, 2 * node.settings.max_events_per_request)


def _check_load(node: Node) -> None:
    # (a sequencer without a queue-depth gauge, e.g. a cluster follower's, is not checked)
    pending = getattr(node.sequencer, "queued_events", 0)
    if pending > max_pending(node):
        node.metrics.rejected.labels("overloaded").inc()
        raise Overloaded(f"{pending} events are waiting to be committed; retry shortly")


# --- OTLP/HTTP logs -------------------------------------------------------------------

_GRPC_CODES = {400: 3, 401: 16, 403: 7, 404: 5, 413: 3, 415: 3, 422: 3, 429: 8, 503: 14}


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def grpc_status(code: int, message: str) -> bytes:
    """A ``google.rpc.Status`` message (``code`` = 1, ``message`` = 2), protobuf-encoded."""
    text = message.encode()
    return b"\x08" + _varint(code) + b"\x12" + _varint(len(text)) + text


def _otlp_failure(exc: AuditfedError, protobuf: bool) -> Response:
    code = _GRPC_CODES.get(exc.status, 13)
    if protobuf:
        headers = {"Retry-After": "1"} if exc.status in (429, 503) else None
        return Response(grpc_status(code, exc.detail), exc.status, headers=headers,
                        media_type="application/x-protobuf")
    exc.extensions.setdefault("code", code)
    exc.extensions.setdefault("message", exc.detail)
    return problem_for(exc)


@router.post("/v1/logs", summary="OTLP/HTTP logs (protobuf or JSON)", responses=BODY_PROBLEMS, openapi_extra={
    "requestBody": {"required": True, "content": {
        "application/x-protobuf": {"schema": {"type": "string", "format": "binary"}},
        "application/json": {"schema": {"type": "object"}},
    }},
})
async def post_logs(request: Request) -> Response:
    """OTLP ``ExportLogsServiceRequest``; one audit event per LogRecord.

    Answers ``ExportLogsServiceResponse`` in the request's encoding, with
    ``partial_success`` for rejected records.
    """
    node = node_of(request)
    content_type = request.headers.get("content-type")
    mt = media_type(content_type)
    protobuf = mt in otlp.PROTOBUF_TYPES
    try:
        caller = await authorise_async(request, *WRITERS)
        if not protobuf and mt not in otlp.JSON_TYPES:
            raise UnsupportedContentType(
                f"unsupported content type {content_type!r} for OTLP/HTTP logs: use "
                "application/x-protobuf or application/json"
            )
        _check_load(node)
        options = {"service": caller.service} if caller.service else None
        batch = await prepare_body(request, node, caller, "otlp", options)
        outcome = await sequence_batch(node, batch)
    except AuditfedError as exc:
        return _otlp_failure(exc, protobuf)
    decoded: Decoded = batch.decoded
    refused = _refused(outcome, decoded)
    payload, media = otlp.partial_success(
        decoded, extra_rejected=len(refused), extra_messages=tuple(refused[:10])
    )
    return Response(payload, 200, media_type=media)


def _refused(outcome: Ingested, decoded: Decoded) -> list[str]:
    """Why the pipeline refused records that decoded (e.g. an invalid mapped event)."""
    return [
        f"record {decoded.positions[i]}: {result.get('error')}"
        for i, result in enumerate(outcome.results)
        if result.get("status") == "rejected" and decoded.items[i] is None
    ]


# --- other source formats --------------------------------------------------------------


#: The bodies ``/v1/ingest/{format}`` reads: JSON (one record, an array, a list envelope),
#: NDJSON, CloudEvents' own media types, or text lines (pgaudit).
_INGEST_BODY_DOC = {
    "requestBody": {"required": True, "content": {
        **{mt: {"schema": {}} for mt in ("application/json", "application/cloudevents+json",
                                         "application/cloudevents-batch+json")},
        **{mt: {"schema": {"type": "string"}} for mt in ("application/x-ndjson", "text/plain")},
    }},
}


@router.post("/v1/ingest/{format}", summary="Records in a source's own format", responses=BODY_PROBLEMS,
             openapi_extra=_INGEST_BODY_DOC)
async def post_ingest(
    request: Request,
    format: str = Path(json_schema_extra={"enum": [*INGEST_FORMATS, *INGEST_ALIASES]}),
) -> Response:
    """Kubernetes audit, CloudTrail, pgaudit, CloudEvents, GitHub audit log, Okta.

    Per-record results like ``POST /v1/events``; ``record`` is the record's position
    in the body. 200 once the accepted events are durable.
    """
    node = node_of(request)
    caller = await authorise_async(request, *WRITERS)
    name = ALIASES.get(format, format)
    if name not in INGEST_FORMATS:
        raise NotFound(
            f"unknown source format {format!r}; known: {', '.join(INGEST_FORMATS)} "
            "(OTLP logs go to /v1/logs)"
        )
    _check_load(node)
    options = {k: v for k, v in request.query_params.items() if k in QUERY_OPTIONS}
    batch = await prepare_body(request, node, caller, name, options)
    outcome = await sequence_batch(node, batch)
    positions = batch.decoded.positions
    for i, result in enumerate(outcome.results):
        result["record"] = positions[i]
    for error in outcome.errors:
        error["record"] = positions[error["item"]]
    return answer(outcome, format=name, skipped=batch.decoded.skipped)

