"""OTLP/HTTP logs from the real OpenTelemetry SDK and exporter -> auditfed events.

The SDK's ``OTLPLogExporter`` posts to a loopback HTTP endpoint that records the
bodies exactly as sent (protobuf). The JSON encoding is the same request rendered with
the OTLP/JSON rules (proto3 JSON mapping, hex trace/span ids).
"""

from __future__ import annotations

import base64
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import orjson
import pytest
from google.protobuf.json_format import MessageToDict
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

from auditfed.errors import InvalidInput
from auditfed.event import validate_event
from auditfed.sources import UnsupportedContentType, decode
from auditfed.sources.otlp import partial_success, response_body


class _Sink(BaseHTTPRequestHandler):
    bodies: ClassVar[list[tuple[str, bytes]]] = []

    def do_POST(self):
        length = int(self.headers["Content-Length"])
        _Sink.bodies.append((self.headers["Content-Type"], self.rfile.read(length)))
        payload = ExportLogsServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def sent():
    """Emit audit logs with the real SDK inside a span; capture what the exporter sent."""
    _Sink.bodies = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    resource = Resource.create({"service.name": "billing-api",
                                "deployment.environment.name": "prod-eu",
                                "host.name": "web-1", "team": "payments"})
    provider = LoggerProvider(resource=resource)
    exporter = OTLPLogExporter(endpoint=f"http://127.0.0.1:{httpd.server_port}/v1/logs")
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    logger = provider.get_logger("auditfed.tests", "1.0")
    tracer = TracerProvider(resource=resource).get_tracer("auditfed.tests")
    with tracer.start_as_current_span("export-invoices") as span:
        ctx = span.get_span_context()
        logger.emit(event_name="data.export", body="exported invoices",
                    attributes={"audit.actor.id": "alice", "audit.resource.type": "table",
                                "audit.resource.id": "billing.invoices",
                                "audit.outcome": "success", "audit.reason": "CHG-1234",
                                "rows": 42, "http.request.header.authorization": "Bearer x"})
        logger.emit(body="user login", attributes={"audit.action": "auth.login",
                                                   "user.id": "bob", "audit.outcome": "denied"})
        logger.emit(body="no action here", attributes={"enduser.id": "carol"})
        logger.emit(event_name="config.update", attributes={"note": "who did it?"})
    provider.shutdown()
    httpd.shutdown()
    bodies = [b for ct, b in _Sink.bodies if ct == "application/x-protobuf"]
    assert bodies, "the exporter sent nothing"
    return ctx, bodies


def _merge(bodies):
    request = ExportLogsServiceRequest()
    for body in bodies:
        request.MergeFromString(body)
    return request


def otlp_json(request: ExportLogsServiceRequest) -> bytes:
    """OTLP/JSON: the proto3 JSON mapping, except trace/span ids are hex."""
    data = MessageToDict(request)
    for rl in data.get("resourceLogs", []):
        for sl in rl.get("scopeLogs", []):
            for rec in sl.get("logRecords", []):
                for key in ("traceId", "spanId"):
                    if key in rec:
                        rec[key] = base64.b64decode(rec[key]).hex()
    return orjson.dumps(data)


def _check(decoded, ctx):
    events = decoded.events
    assert len(events) == 2
    trace_id = trace.format_trace_id(ctx.trace_id)
    span_id = trace.format_span_id(ctx.span_id)
    first, second = events
    for event in events:
        assert validate_event(event) == event
        assert event["trace"] == {"trace_id": trace_id, "span_id": span_id}
        assert event["source"] == {"service": "billing-api", "kind": "otel",
                                   "environment": "prod-eu", "host": "web-1"}
        assert event["time"].endswith("Z")
    assert first["action"] == "data.export"
    assert first["actor"] == {"id": "alice"}
    assert first["resource"] == {"type": "table", "id": "billing.invoices"}
    assert first["outcome"] == "success"
    assert first["reason"] == "CHG-1234"
    assert first["attributes"]["rows"] == 42
    assert first["attributes"]["otel.body"] == "exported invoices"
    assert first["attributes"]["otel.scope.name"] == "auditfed.tests"
    assert first["attributes"]["otel.resource"]["team"] == "payments"
    assert first["original"]["traceId"] == trace_id
    assert second["action"] == "auth.login"
    assert second["actor"] == {"id": "bob"}
    assert second["outcome"] == "denied"
    errors = decoded.errors
    assert [e.position for e in errors] == [2, 3]
    assert "no action" in errors[0].message and "EventName" in errors[0].message
    assert "no actor" in errors[1].message and "user.id" in errors[1].message


def test_protobuf_from_the_real_exporter(sent):
    ctx, bodies = sent
    body = _merge(bodies).SerializeToString()
    decoded = decode("otlp", body, "application/x-protobuf", {})
    assert not decoded.otlp_json
    _check(decoded, ctx)
    payload, media = partial_success(decoded)
    assert media == "application/x-protobuf"
    response = ExportLogsServiceResponse.FromString(payload)
    assert response.partial_success.rejected_log_records == 2
    assert "no action" in response.partial_success.error_message


def test_json_encoding(sent):
    ctx, bodies = sent
    body = otlp_json(_merge(bodies))
    assert b'"observedTimeUnixNano":"' in body  # int64 as strings
    decoded = decode("otlp", body, "application/json; charset=utf-8", {})
    assert decoded.otlp_json
    _check(decoded, ctx)
    payload, media = partial_success(decoded)
    assert media == "application/json"
    assert orjson.loads(payload)["partialSuccess"]["rejectedLogRecords"] == "2"


def test_secret_attribute_redacted(sent):
    from auditfed.sources import Redactor

    _ctx, bodies = sent
    [event, _] = decode("otlp", _merge(bodies).SerializeToString(), "application/x-protobuf",
                        {}).events
    redacted = Redactor(None, b"a-secret-salt-of-16+").apply(event)
    assert b"Bearer x" not in orjson.dumps(redacted)
    assert redacted["attributes"]["rows"] == 42


def test_truncated_protobuf_keeps_complete_records(sent):
    _ctx, bodies = sent
    body = _merge(bodies).SerializeToString()
    cut = body[: len(body) - 10]
    decoded = decode("otlp", cut, "application/x-protobuf", {})
    assert [e["action"] for e in decoded.events] == ["data.export", "auth.login"]
    messages = [e.message for e in decoded.errors]
    assert any("truncated protobuf" in m for m in messages)
    with pytest.raises(InvalidInput, match="invalid OTLP protobuf"):
        decode("otlp", body[:5], "application/x-protobuf", {})
    with pytest.raises(InvalidInput):
        decode("otlp", b"\xff\xff\xff\xff", "application/x-protobuf", {})


def test_wrong_content_type_and_bad_json(sent):
    _ctx, bodies = sent
    with pytest.raises(UnsupportedContentType) as info:
        decode("otlp", bodies[0], "text/plain", {})
    assert info.value.status == 415
    with pytest.raises(InvalidInput, match="invalid OTLP JSON"):
        decode("otlp", b'{"resourceLogs": [', "application/json", {})


def test_empty_response_when_all_accepted():
    payload, media = response_body(0, "", json=False)
    assert payload == b"" and media == "application/x-protobuf"
    assert response_body(0, "", json=True) == (b"{}", "application/json")
