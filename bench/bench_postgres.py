"""Ingest on PostgreSQL (issue #8): one node against the SQLite default, and 2-3 nodes.

Same bodies, same clients as :mod:`bench.bench_ingest` (4 lean keep-alive clients,
batches of 1,000 events); the SQLite default is measured in the same run. PostgreSQL
is a throwaway server from the Debian package (tests/support/postgres.py) with the
durable settings (``fsync=on``, ``full_page_writes=on``, ``synchronous_commit=on``),
so both stores acknowledge only what is flushed to disk.

With several nodes the clients are spread over them: the leader sequences its own
events in its group commit, the followers acknowledge once the events are durable
in the pending table, and the leader sequences those next. ``acked_events_per_s``
counts acknowledgements; ``sequenced_events_per_s`` runs until the last event has
its index. On a two-core machine the nodes share the cores with PostgreSQL and the
clients, so more nodes mostly show that the cluster keeps its rate.

    python -m bench.bench_postgres [--events 100000] [--nodes 1,2,3]
"""

from __future__ import annotations

import argparse
import http.client
import shutil
import tempfile
import threading
import time
from pathlib import Path

import httpx
import orjson
from support.postgres import postgres_server
from support.server import Server, run_cli

from bench.bench_ingest import BATCH, CLIENTS, bodies, through_api
from bench.common import emit, make_events

count_seed = 99  # warm-up events: other ids than the measured ones

DURABLE = {"fsync": "on", "full_page_writes": "on", "synchronous_commit": "on",
           "shared_buffers": "256MB", "max_wal_size": "4GB", "checkpoint_timeout": "30min"}


def start_nodes(url: str, count: int) -> list[Server]:
    base = Path(tempfile.mkdtemp(prefix="auditfed-bench-pg-"))
    first = base / "node1"
    run_cli("init", "--data", str(first), "--store", url, check=True)
    nodes = [Server(first, "--log-level", "warning", store=url).start()]
    for number in range(2, count + 1):
        data = base / f"node{number}"
        shutil.copytree(first, data)
        nodes.append(Server(data, "--log-level", "warning", store=url).start())
    return nodes


def drive(nodes: list[Server], batches: list[bytes]) -> tuple[float, float]:
    """(acknowledged events/s, sequenced events/s) with CLIENTS clients over the nodes."""
    token = nodes[0].token("source", service="billing-api")
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    work = list(batches)
    lock = threading.Lock()
    failures: list[str] = []

    def client(node: Server) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", node.port, timeout=120)
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

    with httpx.Client() as api:
        start_size = api.get(f"{nodes[0].url}/healthz").json()["size"]
    threads = [threading.Thread(target=client, args=(nodes[i % len(nodes)],)) for i in range(CLIENTS)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    acked = time.perf_counter() - started
    if failures:
        raise RuntimeError(f"{len(failures)} failed requests: {failures[0]}")
    total = len(batches) * BATCH
    with httpx.Client() as api:
        while api.get(f"{nodes[0].url}/healthz").json()["size"] < start_size + total:
            time.sleep(0.01)
    sequenced = time.perf_counter() - started
    return total / acked, total / sequenced


def database(pg: object, name: str) -> str:
    import psycopg

    with psycopg.connect(pg.conninfo(), autocommit=True) as conn:  # type: ignore[attr-defined]
        conn.execute(f'CREATE DATABASE "{name}"')
    return pg.url(dbname=name)  # type: ignore[attr-defined]


def run(events: int = 100_000, node_counts: tuple[int, ...] = (1, 2, 3)) -> dict:
    batches = bodies(events)
    other = make_events(5 * BATCH, seed=count_seed)
    warm_up = [orjson.dumps(other[i:i + BATCH]) for i in range(0, len(other), BATCH)]
    sqlite_rate, _ = through_api(batches)
    result: dict = {
        "benchmark": "ingest_postgres",
        "events": events,
        "clients": CLIENTS,
        "batch": BATCH,
        "postgres_settings": {k: DURABLE[k] for k in ("fsync", "full_page_writes", "synchronous_commit")},
        "sqlite_events_per_s": round(sqlite_rate),
        "nodes": {},
    }
    with postgres_server(DURABLE) as pg:
        for count in node_counts:
            nodes = start_nodes(database(pg, f"bench_{count}"), count)
            try:
                drive(nodes, warm_up)
                acked, sequenced = drive(nodes, batches)
            finally:
                for node in nodes:
                    node.stop()
            result["nodes"][str(count)] = {"acked_events_per_s": round(acked),
                                           "sequenced_events_per_s": round(sequenced)}
    one = result["nodes"].get("1")
    if one:
        ratio = one["acked_events_per_s"] / sqlite_rate
        result.update({"one_node_ratio": round(ratio, 3), "goal_ratio": 0.5, "pass": ratio >= 0.5})
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--nodes", default="1,2,3")
    args = parser.parse_args()
    emit(run(args.events, tuple(int(n) for n in args.nodes.split(","))))
