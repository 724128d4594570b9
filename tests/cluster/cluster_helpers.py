"""Helpers of the cluster tests: several nodes on one database, writers that count acks."""

from __future__ import annotations

import base64
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import orjson
from support.postgres import PostgresServer
from support.server import Server, run_cli

_count = iter(range(1, 10_000))


def fresh_database(pg: PostgresServer) -> str:
    import psycopg

    name = f"cluster_{os.getpid()}_{next(_count)}"
    with psycopg.connect(pg.conninfo(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return pg.url(dbname=name)


class Cluster:
    """``count`` nodes sharing one database, the log key and the redaction salt."""

    def __init__(self, base: Path, url: str, count: int, *extra: str,
                 setup: Callable[[Path], tuple[str, ...]] | None = None) -> None:
        """``setup``: called with the first data dir once initialised (its log key
        exists); returns more ``serve`` arguments for every node."""
        first = base / "node1"
        self.admin_token = run_cli("init", "--data", str(first), "--store", url, check=True).stdout.strip()
        if setup is not None:
            extra = (*extra, *setup(first))
        self.url = url
        self.nodes: list[Server] = []
        for number in range(1, count + 1):
            data = base / f"node{number}"
            if number > 1:
                shutil.copytree(first, data)  # log.key, store.url (and the salt, once made)
            server = Server(data, *extra, store=url)
            server.admin_token = self.admin_token
            self.nodes.append(server)
        # The first start makes redaction.salt: start node 1, then copy it to the others.
        self.nodes[0].start()
        for server in self.nodes[1:]:
            shutil.copy2(first / "redaction.salt", server.data_dir / "redaction.salt")
            server.start()

    def status(self, via: Server | None = None) -> dict:
        for server in [via] if via else self.alive():
            try:
                with server.client(self.admin_token) as http:
                    r = http.get("/v1/cluster/status", timeout=5)
                if r.status_code == 200:
                    return r.json()
            except httpx.TransportError:
                continue
        raise AssertionError("no node answers")

    def alive(self) -> list[Server]:
        return [s for s in self.nodes if s.process is not None and s.process.poll() is None]

    def leader(self) -> Server:
        name = self.status()["leader"]
        return next(s for s in self.nodes if name and name.endswith(f":{s.port}"))

    def wait_drained(self, timeout: float = 30) -> dict:
        """Wait until nothing is pending (asking the leader: a follower's own record of
        the status request would be pending)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                status = self.status(via=self.leader())
            except (StopIteration, AssertionError):
                assert time.monotonic() < deadline, "no leader answers"
                time.sleep(0.2)
                continue
            if status["pending"] == 0 and status["leader"]:
                return status
            if time.monotonic() > deadline:
                raise AssertionError(f"pending events not sequenced: {status}")
            time.sleep(0.2)

    def stop(self) -> None:
        for server in self.nodes:
            server.stop()


class Writers:
    """Threads sending batches of fresh events to the nodes, remembering what was acknowledged.

    A batch refused (503) or cut off (the node died) is re-sent to another node, as a
    producer would; an acknowledgement is the only thing that counts.
    """

    def __init__(self, cluster: Cluster, token: str, threads: int = 4, batch: int = 50) -> None:
        self.cluster = cluster
        self.token = token
        self.batch = batch
        self.acked: dict[str, int | None] = {}
        self.statuses: list[int] = []
        self.retry_after_missing = 0
        self.errors: list[str] = []
        self.stop_flag = threading.Event()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)]

    def __enter__(self) -> Writers:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_flag.set()
        for thread in self.threads:
            thread.join(timeout=60)

    def _run(self, number: int) -> None:
        turn = number
        batch = None
        while not self.stop_flag.is_set():
            if batch is None:
                batch = [{"id": str(uuid.uuid4()), "action": "db.write", "actor": {"id": f"w{number}"}}
                         for _ in range(self.batch)]
            nodes = self.cluster.alive()
            if not nodes:
                time.sleep(0.05)
                continue
            node = nodes[turn % len(nodes)]
            turn += 1
            try:
                r = httpx.post(f"{node.url}/v1/events", json=batch, timeout=20,
                               headers={"Authorization": f"Bearer {self.token}"})
            except httpx.TransportError:
                time.sleep(0.02)
                continue
            with self.lock:
                self.statuses.append(r.status_code)
                if r.status_code == 200:
                    for result in r.json()["results"]:
                        self.acked[result["id"]] = result["index"]
                    batch = None
                elif r.status_code == 503:
                    if "retry-after" not in r.headers:
                        self.retry_after_missing += 1
                    time.sleep(0.05)
                else:
                    self.errors.append(f"{r.status_code} {r.text[:300]}")


def log_ids(server: Server, token: str) -> dict[str, list[int]]:
    """Every event id in the log, with the indexes it is stored at."""
    found: dict[str, list[int]] = {}
    with server.client(token) as http:
        size = int(http.get("/v1/log/checkpoint").text.splitlines()[1])
        position = 0
        while position < size:
            page = http.get("/v1/log/entries", params={"start": position, "end": size}).json()["entries"]
            for entry in page:
                found.setdefault(orjson.loads(base64.b64decode(entry["data"]))["id"], []).append(entry["index"])
            position += len(page)
    return found
