"""Federation throughput and forwarding lag: a hub and two nodes, real processes (issue #7).

Goals, measured in one run:

1. *Hub throughput*: with both nodes ingesting at a steady rate, the hub verifies and
   appends node entries at >= 80 % of one node's own maximum ingest rate (measured
   first, in the same run, with the same events and clients as ``bench_ingest``).
   Measured as the hub catching up a backlog both nodes built while it was down,
   while they keep ingesting.
2. *Lag*: at 5,000 events/s in total (2,500/s into each node), the time from a
   node's acknowledgement of a batch to the hub's acknowledgement of its last entry
   (polled from ``GET /v1/federation/nodes/{name}/position``) stays under 2 s at p99.

    python -m bench.bench_federation [--max-events 60000] [--backlog 30000] [--seconds 20]
"""

from __future__ import annotations  # noqa: I001 - bench.common puts tests/ on the path first

import argparse
import http.client
import tempfile
import threading
import time
from pathlib import Path

import orjson

from bench.bench_ingest import bodies, through_api
from bench.common import emit, make_events, percentile
from federation.conftest import Hub, NodeProc  # tests/ is on the path (bench.common)


class Feeder:
    """Posts pre-built batches to a node at a fixed rate; records (ack time, end index)."""

    def __init__(self, node: NodeProc, rate: float, batch: int, seed: int) -> None:
        self.node, self.rate, self.batch = node, rate, batch
        self.seed = seed
        self.acks: list[tuple[float, int]] = []
        self.sent = 0
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        headers = {"Authorization": f"Bearer {self.node.source}", "Content-Type": "application/json"}
        conn = http.client.HTTPConnection("127.0.0.1", self.node.server.port, timeout=120)
        events = make_events(200_000, seed=self.seed)
        interval = self.batch / self.rate
        next_at = time.perf_counter()
        offset = 0
        while not self._stop.is_set():
            chunk = events[offset:offset + self.batch]
            offset += self.batch
            conn.request("POST", "/v1/events", body=orjson.dumps(chunk), headers=headers)
            answer = orjson.loads(conn.getresponse().read())
            end = max(r["index"] for r in answer["results"]) + 1
            self.acks.append((time.perf_counter(), end))
            self.sent += len(chunk)
            next_at += interval
            time.sleep(max(0.0, next_at - time.perf_counter()))
        conn.close()

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.thread.join()


class PositionWatch:
    """Polls the hub's position of each node; when each acknowledged end was reached."""

    def __init__(self, hub: Hub, names: list[str]) -> None:
        self.hub, self.names = hub, names
        self.reached: dict[str, list[tuple[float, int]]] = {n: [] for n in names}
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        headers = {"Authorization": f"Bearer {self.hub.admin}"}
        conn = http.client.HTTPConnection("127.0.0.1", self.hub.server.port, timeout=30)
        while not self._stop.is_set():
            for name in self.names:
                conn.request("GET", f"/v1/federation/nodes/{name}/position", headers=headers)
                position = orjson.loads(conn.getresponse().read())["position"]
                self.reached[name].append((time.perf_counter(), position))
            time.sleep(0.01)
        conn.close()

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.thread.join()

    def lags(self, name: str, acks: list[tuple[float, int]]) -> list[float]:
        seen = self.reached[name]
        lags, k = [], 0
        for acked_at, end in acks:
            while k < len(seen) and (seen[k][1] < end or seen[k][0] < acked_at):
                if seen[k][1] >= end:
                    break
                k += 1
            if k == len(seen):
                break
            lags.append(max(0.0, seen[k][0] - acked_at))
        return lags


def wait_caught_up(hub: Hub, nodes: list[NodeProc], timeout: float = 600) -> float:
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        if all(hub.position(n.name)["position"] >= n.size() for n in nodes):
            return time.perf_counter() - started
        time.sleep(0.05)
    raise RuntimeError("the hub did not catch up")


def run(max_events: int, backlog: int, seconds: float) -> dict:
    node_max, _ = through_api(bodies(max_events), "--log-level", "warning")
    base = Path(tempfile.mkdtemp(prefix="auditfed-bench-federation-"))
    hub = Hub(base, "--log-level", "warning")
    nodes = [NodeProc(base, "eu-prod", hub), NodeProc(base, "us-prod", hub)]
    try:
        # 1. hub throughput: a backlog built while the hub is down, caught up while
        #    both nodes keep ingesting at a steady rate.
        hub.server.stop()
        for seed, node in enumerate(nodes):
            batches = [orjson.dumps(b) for b in _chunks(make_events(backlog, seed=100 + seed), 1000)]
            conn = http.client.HTTPConnection("127.0.0.1", node.server.port, timeout=120)
            for body in batches:
                conn.request("POST", "/v1/events", body=body, headers={
                    "Authorization": f"Bearer {node.source}", "Content-Type": "application/json"})
                assert conn.getresponse().read()
            conn.close()
        steady = 500.0
        feeders = [Feeder(n, steady, 100, 200 + i) for i, n in enumerate(nodes)]
        hub.server.start()
        for f in feeders:
            f.start()
        catch_up = wait_caught_up(hub, nodes)
        hub_rate = sum(n.size() for n in nodes) / catch_up  # everything, incl. what arrived meanwhile
        for f in feeders:
            f.stop()
        wait_caught_up(hub, nodes)

        # 2. lag at 5,000 events/s in total.
        watch = PositionWatch(hub, [n.name for n in nodes])
        feeders = [Feeder(n, 2500.0, 500, 300 + i) for i, n in enumerate(nodes)]
        watch.start()
        for f in feeders:
            f.start()
        time.sleep(seconds)
        for f in feeders:
            f.stop()
        wait_caught_up(hub, nodes)
        time.sleep(0.1)
        watch.stop()
        lags = [lag for f in feeders for lag in watch.lags(f.node.name, f.acks)]
        offered = sum(f.sent for f in feeders) / seconds
    finally:
        for n in nodes:
            n.stop()
        hub.stop()
    p99 = percentile(lags, 0.99)
    return {
        "benchmark": "federation",
        "node_max_ingest_events_per_s": round(node_max),
        "hub_catch_up_events_per_s": round(hub_rate),
        "hub_backlog_events": 2 * backlog,
        "hub_steady_ingest_per_node_events_per_s": steady,
        "hub_ratio_to_node_max": round(hub_rate / node_max, 3),
        "goal_hub_ratio": 0.8,
        "lag_offered_events_per_s": round(offered),
        "lag_batches": len(lags),
        "lag_p50_s": round(percentile(lags, 0.5), 3),
        "lag_p99_s": round(p99, 3),
        "lag_max_s": round(max(lags), 3),
        "goal_lag_p99_s": 2.0,
        "pass": hub_rate / node_max >= 0.8 and p99 < 2.0,
    }


def _chunks(items: list, size: int) -> list[list]:
    return [items[i:i + size] for i in range(0, len(items), size)]


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--max-events", type=int, default=60_000)
    parser.add_argument("--backlog", type=int, default=30_000)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    emit(run(args.max_events, args.backlog, args.seconds))
