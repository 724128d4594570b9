"""Ingest throughput through the HTTP API against a raw SQLite baseline (issue #2).

Goal: 4 concurrent clients sending batches of 1,000 events reach at least 50 % of
the events/s of the raw baseline, measured in the same run: the same request bodies
parsed and inserted into a bare SQLite table (no hashing, no indexes), in the same
durability mode (WAL, synchronous=FULL, one commit per batch).

    python -m bench.bench_ingest [--events 200000]
"""

from __future__ import annotations

import argparse
import http.client
import sqlite3
import tempfile
import threading
import time
from pathlib import Path

import httpx
import orjson

from bench.common import emit, make_events, start_server

CLIENTS = 4
BATCH = 1000


def bodies(count: int) -> list[bytes]:
    events = make_events(count)
    return [orjson.dumps(events[i:i + BATCH]) for i in range(0, count, BATCH)]


def raw_baseline(batches: list[bytes]) -> float:
    """Parse each body and insert its events into a bare table; events/s."""
    path = Path(tempfile.mkdtemp()) / "raw.db"
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE events (id TEXT, data BLOB)")
    started = time.perf_counter()
    for body in batches:
        events = orjson.loads(body)
        db.execute("BEGIN")
        db.executemany("INSERT INTO events VALUES (?, ?)", ((e["id"], orjson.dumps(e)) for e in events))
        db.execute("COMMIT")
    elapsed = time.perf_counter() - started
    db.close()
    return len(batches) * BATCH / elapsed


def through_api(batches: list[bytes], *server_args: str) -> tuple[float, dict]:
    """Events/s of POST /v1/events with CLIENTS concurrent lean clients."""
    server = start_server("--log-level", "warning", *server_args)
    token = server.token("source", service="billing-api")
    work = list(batches)
    lock = threading.Lock()
    failures: list[str] = []

    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    def client() -> None:
        # A lean client (http.client, keep-alive): the machine's two cores are shared
        # with the server, so the load generator should cost as little as possible.
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
        while True:
            with lock:
                if not work:
                    break
                body = work.pop()
            conn.request("POST", "/v1/events", body=body, headers=headers)
            response = conn.getresponse()
            answer = response.read()
            if response.status != 200 or orjson.loads(answer)["accepted"] != BATCH:
                failures.append(answer[:200].decode(errors="replace"))
        conn.close()

    threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    metrics = httpx.get(f"{server.url}/metrics").text
    server.stop()
    if failures:
        raise RuntimeError(f"{len(failures)} failed requests: {failures[0]}")
    commits = next(float(line.split()[-1]) for line in metrics.splitlines()
                   if line.startswith("auditfed_commit_batch_events_count"))
    return len(batches) * BATCH / elapsed, {"group_commits": int(commits)}


def run(events: int = 200_000) -> dict:
    batches = bodies(events)
    raw_baseline(batches[:20])  # warm the page cache and the allocator
    baseline = raw_baseline(batches)
    api, details = through_api(batches)
    return {
        "benchmark": "ingest_http",
        "events": events,
        "clients": CLIENTS,
        "batch": BATCH,
        "api_events_per_s": round(api),
        "raw_baseline_events_per_s": round(baseline),
        "ratio": round(api / baseline, 3),
        "goal_ratio": 0.5,
        "pass": api / baseline >= 0.5,
        **details,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=200_000)
    emit(run(parser.parse_args().events))
