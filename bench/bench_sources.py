"""Source ingest throughput: CloudTrail and OTLP protobuf against ``POST /v1/events`` (issue #3).

Goal: normalisation must not be the bottleneck. CloudTrail (``POST /v1/ingest/cloudtrail``)
and OTLP/HTTP protobuf (``POST /v1/logs``) reach at least 70 % of the events/s that
``POST /v1/events`` reaches with the same events already in auditfed's format, measured
in the same run: every source body is normalised once up front (``auditfed.sources.decode``)
into the /v1/events body holding exactly those events. Each measurement runs on a fresh
server; 4 concurrent lean clients (http.client, keep-alive) send batches of 1,000.

CloudTrail records are the Stratus Red Team files (real records, ~1.4 KB each), repeated
with fresh event ids; OTLP requests are made with the protobuf classes the SDK uses
(audit attributes, trace context, a few free attributes).

    python -m bench.bench_sources [--events 60000]
"""

from __future__ import annotations

import argparse
import http.client
import random
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import orjson
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from auditfed.sources import decode
from bench.common import emit, start_server

CLIENTS = 4
BATCH = 1000
STRATUS = Path(__file__).resolve().parents[1] / "tests" / "data" / "cloudtrail" / "stratus-red-team"


def cloudtrail_bodies(count: int) -> list[bytes]:
    records = []
    for path in sorted(STRATUS.glob("*.json")):
        whole = orjson.loads(path.read_bytes())
        records += whole["Records"] if isinstance(whole, dict) else whole
    rng = random.Random(3)
    out = []
    for _start in range(0, count, BATCH):
        batch = []
        for _ in range(BATCH):
            record = dict(rng.choice(records))
            record["eventID"] = str(uuid.UUID(int=rng.getrandbits(128), version=4))
            batch.append(record)
        out.append(orjson.dumps({"Records": batch}))
    return out


def _kv(key: str, value: str | int) -> KeyValue:
    any_value = AnyValue(int_value=value) if isinstance(value, int) else AnyValue(string_value=value)
    return KeyValue(key=key, value=any_value)


def otlp_bodies(count: int) -> list[bytes]:
    rng = random.Random(5)
    actions = ["data.export", "auth.login", "config.update", "db.query", "invoice.approve"]
    out = []
    base = 1_795_800_000_000_000_000
    for start in range(0, count, BATCH):
        request = ExportLogsServiceRequest()
        rl = request.resource_logs.add()
        rl.resource.attributes.extend([_kv("service.name", "billing-api"),
                                       _kv("deployment.environment.name", "prod-eu"),
                                       _kv("host.name", f"web-{start % 7}")])
        sl = rl.scope_logs.add()
        sl.scope.name = "billing.audit"
        for i in range(BATCH):
            rec = sl.log_records.add()
            rec.time_unix_nano = base + (start + i) * 1_000_000
            rec.observed_time_unix_nano = rec.time_unix_nano + 5_000
            rec.event_name = rng.choice(actions)
            rec.severity_number = 9
            rec.trace_id = rng.getrandbits(128).to_bytes(16, "big")
            rec.span_id = (rng.getrandbits(64) or 1).to_bytes(8, "big")
            rec.body.string_value = "audit record"
            rec.attributes.extend([
                _kv("audit.id", str(uuid.UUID(int=rng.getrandbits(128), version=4))),
                _kv("audit.actor.id", f"user{rng.randrange(500)}"),
                _kv("audit.resource.type", "table"),
                _kv("audit.resource.id", f"billing.t{rng.randrange(200)}"),
                _kv("audit.outcome", rng.choice(["success", "success", "failure", "denied"])),
                _kv("client.address", f"203.0.113.{rng.randrange(255)}"),
                _kv("rows", rng.randrange(10_000)),
                _kv("db.statement", "SELECT * FROM invoices WHERE id = $1"),
            ])
        out.append(request.SerializeToString())
    return out


def as_events(fmt: str, bodies: list[bytes], content_type: str) -> list[bytes]:
    """The same events, normalised once up front, as /v1/events bodies."""
    out = []
    for body in bodies:
        decoded = decode(fmt, body, content_type, {})
        assert not decoded.errors and len(decoded.events) == BATCH, decoded.errors[:3]
        out.append(orjson.dumps(decoded.events))
    return out


def _accepted_json(answer: bytes) -> int:
    return orjson.loads(answer)["accepted"]


def _accepted_otlp(answer: bytes) -> int:
    return BATCH - ExportLogsServiceResponse.FromString(answer).partial_success.rejected_log_records


def measure(path: str, content_type: str, bodies: list[bytes],
            accepted: Callable[[bytes], int]) -> float:
    """events/s of 4 clients posting ``bodies`` to ``path`` on a fresh server."""
    server = start_server("--log-level", "warning")
    headers = {"Authorization": f"Bearer {server.admin_token}", "Content-Type": content_type}
    work = list(reversed(bodies))
    lock = threading.Lock()
    failures: list[str] = []

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
        while True:
            with lock:
                if not work:
                    break
                body = work.pop()
            conn.request("POST", path, body=body, headers=headers)
            response = conn.getresponse()
            answer = response.read()
            if response.status != 200 or accepted(answer) != BATCH:
                failures.append(f"{response.status} {answer[:200]!r}")
        conn.close()

    try:
        threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
        started = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - started
    finally:
        server.stop()
    if failures:
        raise RuntimeError(f"{len(failures)} failed requests to {path}: {failures[0]}")
    return len(bodies) * BATCH / elapsed


def run(events: int = 60_000) -> dict:
    events = max(BATCH, events // BATCH * BATCH)
    results: dict = {"benchmark": "ingest_sources", "events": events, "clients": CLIENTS,
                     "batch": BATCH, "goal_ratio": 0.7}
    ok = True
    for name, fmt, path, content_type, make, accepted in (
        ("cloudtrail", "cloudtrail", "/v1/ingest/cloudtrail", "application/json",
         cloudtrail_bodies, _accepted_json),
        ("otlp_protobuf", "otlp", "/v1/logs", "application/x-protobuf", otlp_bodies, _accepted_otlp),
    ):
        source = make(events)
        baseline_bodies = as_events(fmt, source, content_type)
        baseline = measure("/v1/events", "application/json", baseline_bodies, _accepted_json)
        rate = measure(path, content_type, source, accepted)
        ratio = rate / baseline
        ok = ok and ratio >= 0.7
        results[name] = {
            "endpoint": path,
            "events_per_s": round(rate),
            "baseline_v1_events_per_s": round(baseline),
            "ratio": round(ratio, 3),
            "source_bytes_per_event": round(sum(map(len, source)) / events),
            "event_bytes_per_event": round(sum(map(len, baseline_bodies)) / events),
            "pass": ratio >= 0.7,
        }
    results["pass"] = ok
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=60_000)
    emit(run(parser.parse_args().events))
