"""Alert latency: ingest acknowledgement → webhook delivery, under steady load (issue #6).

Goal: p99 ≤ 100 ms while ingesting 5,000 events/s.

A real server (``auditfed serve``, SQLite, fsync per commit by default) runs the
default rule pack plus one simple rule (``action: bench.trigger``) and one webhook
(HMAC-signed) pointing at a receiver in a separate process on loopback. Sender threads
POST batches of ``--batch`` events to ``/v1/events`` on a fixed schedule for
``--seconds`` (``--rate`` events/s); a ``--trigger-fraction`` of the events match the
simple rule. For every trigger event the client notes when the 200 answer (the
durable ack) arrived; the receiver notes when the alert's POST arrived. Latency is
the difference (both clocks are this machine's wall clock); the first
``--warmup`` seconds are not counted.

    .venv/bin/python -m bench.bench_alerts [--rate 5000] [--seconds 20] [--no-fsync]
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson

from bench.common import Server, emit, percentile

RULE_ID = "0c6f3f1e-2d1b-4b4e-8a0e-000000000001"
RULE = f"""\
title: Bench Trigger
id: {RULE_ID}
status: test
logsource:
    product: auditfed
detection:
    selection:
        action: bench.trigger
    condition: selection
level: high
"""
SECRET = "bench-secret"


# --- the webhook receiver (its own process: its clock reads are not delayed by ours) ---

def _receiver(port_out: Any, record_path: str) -> None:
    out = Path(record_path).open("a", buffering=1)  # noqa: SIM115

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            received = time.time()
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()
            alert = orjson.loads(body)
            out.write(json.dumps({"t": received, "rule_id": alert["rule_id"],
                                  "indexes": alert["indexes"]}) + "\n")

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    port_out.send(server.server_address[1])
    server.serve_forever()


# --- load ----------------------------------------------------------------------------

def _event(trigger: bool, n: int) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "time": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "action": "bench.trigger" if trigger else ("db.query", "http.request", "invoice.export")[n % 3],
        "outcome": "success",
        "actor": {"id": f"user{n % 500}", "type": "user", "ip": f"203.0.113.{n % 250}"},
        "resource": {"type": "table", "id": f"billing.t{n % 200}", "name": "invoices"},
        "source": {"service": "bench-api", "environment": "bench"},
        "request_id": f"req-{n}",
        "reason": "CHG-1234 bench",
        "attributes": {"rows": n % 10_000},
    }


def run(args: argparse.Namespace | None = None) -> dict[str, Any]:
    if args is None:
        args = parser().parse_args([])
    base = Path(tempfile.mkdtemp(prefix="auditfed-bench-alerts-"))
    (base / "rules").mkdir()
    (base / "rules" / "bench.yml").write_text(RULE)
    record_path = base / "received.jsonl"
    parent, child = multiprocessing.Pipe()
    receiver = multiprocessing.Process(target=_receiver, args=(child, str(record_path)), daemon=True)
    receiver.start()
    hook_port = parent.recv()
    config = base / "auditfed.toml"
    config.write_text(
        f"default_rules = {'true' if args.default_pack else 'false'}\n"
        f"rules = [{json.dumps(str(base / 'rules'))}]\n"
        f"[[webhooks]]\nurl = \"http://127.0.0.1:{hook_port}/alerts\"\nsecret = \"{SECRET}\"\ntimeout = 5.0\n"
    )
    extra = ["--config", str(config), "--log-level", "warning"]
    if not args.fsync:
        extra.append("--no-fsync")
    server = Server(base / "data", *extra).start()
    token = server.token("admin")

    batches = int(args.rate * args.seconds / args.batch)
    interval = args.batch / args.rate
    every = max(1, round(1 / args.trigger_fraction))
    # Pre-built bodies: the sender threads only send.
    bodies: list[tuple[bytes, list[int]]] = []
    n = 0
    for _ in range(batches):
        events, triggers = [], []
        for position in range(args.batch):
            trigger = n % every == every // 2
            events.append(_event(trigger, n))
            if trigger:
                triggers.append(position)
            n += 1
        bodies.append((orjson.dumps(events), triggers))

    acks: dict[int, float] = {}  # log index of a trigger event -> ack time
    ack_latency: list[float] = []
    late_sends = 0
    failures: list[str] = []
    lock = threading.Lock()
    counter = iter(range(batches))
    start = time.time() + 0.5

    def sender() -> None:
        nonlocal late_sends
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        while True:
            with lock:
                k = next(counter, None)
            if k is None:
                break
            due = start + k * interval
            delay = due - time.time()
            if delay > 0:
                time.sleep(delay)
            elif delay < -0.05:
                late_sends += 1
            body, triggers = bodies[k]
            sent = time.time()
            try:
                conn.request("POST", "/v1/events", body, headers)
                response = conn.getresponse()
                answer = response.read()
            except (OSError, http.client.HTTPException) as exc:
                failures.append(repr(exc))
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
                continue
            acked = time.time()
            if response.status != 200:
                failures.append(f"HTTP {response.status}")
                continue
            results = orjson.loads(answer)["results"]
            with lock:
                ack_latency.append(acked - sent)
                if sent - start >= args.warmup:
                    for position in triggers:
                        acks[results[position]["index"]] = acked
        conn.close()

    threads = [threading.Thread(target=sender) for _ in range(args.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.time() - start
    # Let the last alerts arrive.
    deadline = time.time() + 10
    received: dict[int, float] = {}
    while time.time() < deadline:
        received = {}
        for line in record_path.read_text().splitlines():
            row = json.loads(line)
            if row["rule_id"] == RULE_ID:
                received[row["indexes"][0]] = row["t"]
        if all(index in received for index in acks):
            break
        time.sleep(0.2)
    with server.client(token) as client:
        metrics = client.get("/metrics").text
    server.stop()
    receiver.terminate()
    rows = [json.loads(line) for line in record_path.read_text().splitlines()]
    other_alerts = sum(1 for row in rows if row["rule_id"] != RULE_ID)
    bench_rows = [row for row in rows if row["rule_id"] == RULE_ID]
    duplicates = len(bench_rows) - len({row["indexes"][0] for row in bench_rows})

    latencies = [received[i] - t for i, t in acks.items() if i in received]
    attempts = {line.split('"')[1]: float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
                if line.startswith("auditfed_webhook_attempts_total")}
    result: dict[str, Any] = {
        "benchmark": "alerts.latency",
        "goal": "p99 ack->webhook <= 100 ms at 5,000 events/s",
        "cpus": os.cpu_count(),
        "fsync": args.fsync,
        "default_pack": args.default_pack,
        "target_rate": args.rate,
        "achieved_rate": round(batches * args.batch / elapsed, 1),
        "seconds": round(elapsed, 2),
        "batch": args.batch,
        "clients": args.clients,
        "late_sends": late_sends,
        "failures": len(failures),
        "trigger_events_measured": len(acks),
        "alerts_delivered": len(latencies),
        "alerts_missing": len(acks) - len(latencies),
        "duplicate_deliveries": duplicates,
        "other_alerts": other_alerts,
        "ack_p50_ms": round(percentile(ack_latency, 0.5) * 1000, 2) if ack_latency else None,
        "ack_p99_ms": round(percentile(ack_latency, 0.99) * 1000, 2) if ack_latency else None,
        "webhook_attempts": attempts,
    }
    if latencies:
        result.update({
            "alert_p50_ms": round(percentile(latencies, 0.5) * 1000, 2),
            "alert_p90_ms": round(percentile(latencies, 0.9) * 1000, 2),
            "alert_p99_ms": round(percentile(latencies, 0.99) * 1000, 2),
            "alert_max_ms": round(max(latencies) * 1000, 2),
            "alert_min_ms": round(min(latencies) * 1000, 2),
        })
        result["goal_met"] = result["alert_p99_ms"] <= 100 and result["achieved_rate"] >= 0.95 * args.rate
    if failures:
        result["first_failures"] = failures[:5]
    return result


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, default=5000, help="events per second")
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--batch", type=int, default=50, help="events per request")
    ap.add_argument("--clients", type=int, default=4, help="sender threads (connections)")
    ap.add_argument("--trigger-fraction", type=float, default=0.01)
    ap.add_argument("--warmup", type=float, default=2.0, help="seconds not measured")
    ap.add_argument("--fsync", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--default-pack", action=argparse.BooleanOptionalAction, default=True,
                    help="also load the bundled rule pack")
    return ap


def main(argv: list[str] | None = None) -> None:
    emit(run(parser().parse_args(argv)))


if __name__ == "__main__":
    main()
