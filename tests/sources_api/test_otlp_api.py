"""POST /v1/logs on a real server, fed by the real OpenTelemetry SDK and its exporter.

Protobuf: the SDK's ``OTLPLogExporter`` (OTLP/HTTP, with and without gzip). JSON: the
SDK's own request encoder (``encode_logs``) rendered with the OTLP/JSON rules and posted
by httpx from an SDK ``LogRecordExporter`` (the Python exporter speaks protobuf only).
Logs are emitted inside a span: the trace ids must reach the stored events.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
from collections.abc import Sequence

import httpx
import orjson
import pytest
import requests
from google.protobuf.json_format import MessageToDict
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.sdk._logs import LoggerProvider, ReadableLogRecord
from opentelemetry.sdk._logs.export import (
    LogRecordExporter,
    LogRecordExportResult,
    SimpleLogRecordProcessor,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from sources_api.conftest import events_of, store_bytes
from support.server import Server

SECRET = "Bearer s3cr3t-otlp-token"


class RecordingSession(requests.Session):
    """The exporter's HTTP session, keeping every answer for the test to read."""

    def __init__(self) -> None:
        super().__init__()
        self.answers: list[requests.Response] = []

    def request(self, *args, **kwargs):
        response = super().request(*args, **kwargs)
        self.answers.append(response)
        return response


def otlp_json(request: ExportLogsServiceRequest) -> bytes:
    """OTLP/JSON: the proto3 JSON mapping with hex trace/span ids (OTLP spec)."""
    data = MessageToDict(request)
    for rl in data.get("resourceLogs", []):
        for sl in rl.get("scopeLogs", []):
            for rec in sl.get("logRecords", []):
                for key in ("traceId", "spanId"):
                    if key in rec:
                        rec[key] = base64.b64decode(rec[key]).hex()
    return orjson.dumps(data)


class JsonExporter(LogRecordExporter):
    """An SDK exporter speaking OTLP/HTTP with the JSON encoding."""

    def __init__(self, url: str, token: str) -> None:
        self.http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"})
        self.answers: list[httpx.Response] = []

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        body = otlp_json(encode_logs(batch))
        answer = self.http.post("/v1/logs", content=body,
                                headers={"Content-Type": "application/json"})
        self.answers.append(answer)
        return LogRecordExportResult.SUCCESS if answer.status_code == 200 else LogRecordExportResult.FAILURE

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True

    def shutdown(self) -> None:
        self.http.close()


def emit_audit_logs(exporter: LogRecordExporter, service: str) -> trace.SpanContext:
    """Two good audit records, two without action/actor, all inside one span."""
    resource = Resource.create({"service.name": service, "host.name": "web-1"})
    provider = LoggerProvider(resource=resource)
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    logger = provider.get_logger("auditfed.tests.api", "1.0")
    tracer = TracerProvider(resource=resource).get_tracer("auditfed.tests.api")
    with tracer.start_as_current_span("export-invoices") as span:
        ctx = span.get_span_context()
        logger.emit(event_name="data.export", body="exported invoices",
                    attributes={"audit.actor.id": "alice", "audit.resource.type": "table",
                                "audit.resource.id": "billing.invoices",
                                "audit.outcome": "success", "rows": 42,
                                "http.request.header.authorization": SECRET})
        logger.emit(body="user login", attributes={"audit.action": "auth.login",
                                                   "user.id": "bob", "audit.outcome": "denied"})
        logger.emit(body="no action here", attributes={"enduser.id": "carol"})
        logger.emit(event_name="config.update", attributes={"note": "who did it?"})
    provider.shutdown()
    return ctx


def check_stored(server: Server, admin: str, service: str, ctx: trace.SpanContext) -> None:
    mine = [e for _, e in events_of(server, admin) if e["source"]["service"] == service]
    assert [e["action"] for e in mine] == ["data.export", "auth.login"]
    trace_id, span_id = trace.format_trace_id(ctx.trace_id), trace.format_span_id(ctx.span_id)
    for event in mine:
        assert event["trace"] == {"trace_id": trace_id, "span_id": span_id}
        assert event["source"]["kind"] == "otel" and event["source"]["host"] == "web-1"
        assert event["original"]["traceId"] == trace_id
    export, login = mine
    assert export["actor"]["id"] == "alice" and export["outcome"] == "success"
    assert export["resource"] == {"type": "table", "id": "billing.invoices"}
    assert export["attributes"]["rows"] == 42
    assert login["actor"]["id"] == "bob" and login["outcome"] == "denied"
    # a query by trace id finds them
    with server.client(admin) as http:
        found = http.get("/v1/events", params={"q": f"trace:{trace_id}", "order": "oldest"})
    assert [e["event"]["action"] for e in found.json()["events"]] == ["data.export", "auth.login"]


@pytest.mark.parametrize("compression", [Compression.NoCompression, Compression.Gzip])
def test_sdk_protobuf_exporter(server: Server, admin: str, compression: Compression) -> None:
    service = f"otel-pb-{compression.value}"
    token = server.token("source", service=service)
    session = RecordingSession()
    exporter = OTLPLogExporter(endpoint=f"{server.url}/v1/logs", compression=compression,
                               headers={"Authorization": f"Bearer {token}"}, session=session)
    ctx = emit_audit_logs(exporter, service)
    assert [a.status_code for a in session.answers] == [200, 200, 200, 200]
    assert all(a.headers["content-type"] == "application/x-protobuf" for a in session.answers)
    answers = [ExportLogsServiceResponse.FromString(a.content) for a in session.answers]
    rejected = [a.partial_success.rejected_log_records for a in answers]
    assert rejected == [0, 0, 1, 1]
    assert "no action" in answers[2].partial_success.error_message
    assert "no actor" in answers[3].partial_success.error_message
    check_stored(server, admin, service, ctx)
    assert SECRET.encode() not in store_bytes(server)


def test_json_encoding(server: Server, admin: str) -> None:
    service = "otel-json"
    token = server.token("source", service=service)
    exporter = JsonExporter(server.url, token)
    ctx = emit_audit_logs(exporter, service)
    assert [a.status_code for a in exporter.answers] == [200, 200, 200, 200]
    assert all(a.headers["content-type"] == "application/json" for a in exporter.answers)
    partial = [a.json().get("partialSuccess") for a in exporter.answers]
    assert partial[:2] == [None, None]
    assert partial[2]["rejectedLogRecords"] == "1" and "no action" in partial[2]["errorMessage"]
    assert partial[3]["rejectedLogRecords"] == "1" and "no actor" in partial[3]["errorMessage"]
    check_stored(server, admin, service, ctx)


def _request(*records: dict, service: str | None = None) -> ExportLogsServiceRequest:
    body = {"resourceLogs": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": service}}]
                     if service else []},
        "scopeLogs": [{"logRecords": list(records)}],
    }]}
    request = ExportLogsServiceRequest()
    from google.protobuf.json_format import ParseDict

    ParseDict(body, request)
    return request


def _record(action: str, actor: str | None = "alice", **attrs: str) -> dict:
    attributes = [{"key": k, "value": {"stringValue": v}} for k, v in attrs.items()]
    if actor:
        attributes.append({"key": "user.id", "value": {"stringValue": actor}})
    return {"eventName": action, "timeUnixNano": "1795800000000000000", "attributes": attributes}


def test_pipeline_rejections_count_in_partial_success(server: Server, admin: str) -> None:
    token = server.token("source", service="otel-partial")
    request = _request(_record("ok.action"), _record("bad action!"), _record("x", actor=None))
    with server.client(token) as http:
        answer = http.post("/v1/logs", content=request.SerializeToString(),
                           headers={"Content-Type": "application/x-protobuf"})
    assert answer.status_code == 200
    partial = ExportLogsServiceResponse.FromString(answer.content).partial_success
    # "bad action!" decodes but is not a valid action: the pipeline refuses it
    assert partial.rejected_log_records == 2
    assert "record 1" in partial.error_message and "record 2" in partial.error_message
    mine = [e for _, e in events_of(server, admin) if e["source"]["service"] == "otel-partial"]
    assert [e["action"] for e in mine] == ["ok.action"]


def test_truncated_protobuf_keeps_complete_records(server: Server, admin: str) -> None:
    token = server.token("source", service="otel-cut")
    request = _request(_record("first.action"), _record("second.action"),
                       _record("third.action", note="x" * 200))
    body = request.SerializeToString()
    with server.client(token) as http:
        answer = http.post("/v1/logs", content=body[:-50],
                           headers={"Content-Type": "application/x-protobuf"})
        garbage = http.post("/v1/logs", content=b"\xff\xff\xff\xff",
                            headers={"Content-Type": "application/x-protobuf"})
    assert answer.status_code == 200
    partial = ExportLogsServiceResponse.FromString(answer.content).partial_success
    assert partial.rejected_log_records == 1 and "truncated" in partial.error_message
    mine = [e for _, e in events_of(server, admin) if e["source"]["service"] == "otel-cut"]
    assert [e["action"] for e in mine] == ["first.action", "second.action"]
    # a body that is no protobuf at all: 400 with a google.rpc.Status in protobuf
    assert garbage.status_code == 400
    assert garbage.headers["content-type"] == "application/x-protobuf"
    assert b"invalid OTLP protobuf" in garbage.content and garbage.content[:2] == b"\x08\x03"


def test_wrong_content_type_and_auth(server: Server) -> None:
    token = server.token("source", service="otel-ct")
    body = otlp_json(_request(_record("a.b")))
    with server.client(token) as http:
        wrong = http.post("/v1/logs", content=body, headers={"Content-Type": "text/plain"})
        form = http.post("/v1/logs", data={"a": "b"})
    with server.client() as anonymous:
        unauth = anonymous.post("/v1/logs", content=body,
                                headers={"Content-Type": "application/json"})
    for answer in (wrong, form):
        assert answer.status_code == 415, answer.text
        assert answer.json()["status"] == 415 and "application/x-protobuf" in answer.json()["detail"]
    assert unauth.status_code == 401 and unauth.json()["code"] == 16


def test_service_name_is_a_claim_bound_by_the_token(server: Server, admin: str) -> None:
    token = server.token("source", service="otel-bound")
    with server.client(token) as http:
        same = http.post("/v1/logs", content=otlp_json(_request(_record("a.one"), service="otel-bound")),
                         headers={"Content-Type": "application/json"})
        mixed = _request(_record("a.two"))
        mixed.resource_logs.append(_request(_record("a.three"), service="someone-else").resource_logs[0])
        refused = http.post("/v1/logs", content=mixed.SerializeToString(),
                            headers={"Content-Type": "application/x-protobuf"})
        unnamed = http.post("/v1/logs", content=gzip.compress(otlp_json(_request(_record("a.four")))),
                            headers={"Content-Type": "application/json", "Content-Encoding": "gzip"})
    assert same.status_code == 200 and same.json() == {}
    assert refused.status_code == 403
    assert b"someone-else" in refused.content  # a google.rpc.Status naming the claim
    assert unnamed.status_code == 200 and unnamed.json() == {}
    mine = [e for _, e in events_of(server, admin) if e["source"]["service"] == "otel-bound"]
    actions = [e["action"] for e in mine]
    # nothing of the 403 request; no service.name: the token's service
    assert actions == ["a.one", "a.four"]


def test_overload_answers_429_with_retry_after(tmp_path) -> None:
    """A deep sequencer queue makes /v1/logs and /v1/ingest answer 429 + Retry-After."""
    from auditfed.api.app import create_app
    from auditfed.api.source_routes import max_pending
    from auditfed.config import load_settings
    from auditfed.node import Node, initialise

    settings = load_settings(data_dir=tmp_path / "d", max_commit_events=10,
                             max_events_per_request=10, fsync=False)
    created = initialise(settings)
    node = Node(settings)  # not started: what is submitted waits
    try:
        from auditfed.identity.tokens import Caller
        from auditfed.ingest.prepare import prepare_event

        caller = Caller("t", "admin")
        waiting = [prepare_event({"action": "a.b", "actor": {"id": "x"}, "source": {"service": "s"}},
                                 0, caller, "2026-11-27T00:00:00.000000Z")
                   for _ in range(max_pending(node) + 1)]
        node.sequencer.submit(waiting)
        assert node.sequencer.queued_events == len(waiting)
        app = create_app(node, start_node=False)
        headers = {"Authorization": f"Bearer {created.admin_token}"}

        async def calls() -> tuple[httpx.Response, httpx.Response]:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://node") as client:
                logs = await client.post("/v1/logs", content=_request(_record("a.b")).SerializeToString(),
                                         headers={**headers, "Content-Type": "application/x-protobuf"})
                ingest = await client.post("/v1/ingest/okta", content=b"{}",
                                           headers={**headers, "Content-Type": "application/json"})
            return logs, ingest

        logs, ingest = asyncio.run(calls())
        assert logs.status_code == 429 and logs.headers["retry-after"] == "1"
        assert ingest.status_code == 429 and ingest.headers["retry-after"] == "1"
    finally:
        node.store.close()
