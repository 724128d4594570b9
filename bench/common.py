"""Shared pieces of the benchmarks: realistic events, a server, percentiles, output."""

from __future__ import annotations

import json
import random
import statistics
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from support.server import Server

SERVICES = ["web-gateway", "billing-api", "postgresql", "s3-export", "idp"]
ACTIONS = ["http.request", "invoice.export", "db.query", "data.export", "auth.login", "config.update"]


def make_events(count: int, seed: int = 7) -> list[dict[str, Any]]:
    """Events of the shape and size real producers send (~450 bytes of JSON each)."""
    rng = random.Random(seed)
    events = []
    for i in range(count):
        events.append({
            "id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "time": f"2026-11-27T17:{(i // 60) % 60:02d}:{i % 60:02d}.{i % 1000000:06d}Z",
            "action": rng.choice(ACTIONS),
            "outcome": rng.choice(["success", "success", "success", "failure", "denied"]),
            "actor": {"id": f"user{rng.randrange(500)}", "type": "user",
                      "ip": f"203.0.113.{rng.randrange(255)}", "user_agent": "Mozilla/5.0 (X11; Linux)"},
            "resource": {"type": "table", "id": f"billing.t{rng.randrange(200)}", "name": "invoices"},
            "trace": {"trace_id": f"{rng.getrandbits(128):032x}", "span_id": f"{rng.getrandbits(64) or 1:016x}"},
            "request_id": f"req-{i}",
            "reason": "CHG-1234 quarterly close",
            "attributes": {"rows": rng.randrange(10000), "query": "SELECT * FROM invoices WHERE id = $1"},
        })
    return events


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summary_ms(values: list[float]) -> dict[str, float]:
    return {"p50_ms": round(percentile(values, 0.5) * 1000, 3),
            "p99_ms": round(percentile(values, 0.99) * 1000, 3),
            "mean_ms": round(statistics.fmean(values) * 1000, 3)}


def start_server(*extra: str) -> Server:
    base = Path(tempfile.mkdtemp(prefix="auditfed-bench-"))
    return Server(base / "data", *extra).start()


def emit(result: dict[str, Any]) -> None:
    print(json.dumps(result, indent=2))
