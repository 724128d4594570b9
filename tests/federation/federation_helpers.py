"""A hub and nodes as real ``auditfed serve`` processes on loopback."""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
from support.server import Server, run_cli

from auditfed.ledger import Signer


def node_key(data_dir: Path) -> str:
    """The verifier key of a data dir's log."""
    return Signer.from_key((data_dir / "log.key").read_text().strip()).verifier_key()


def wait_for(check: Callable[[], Any], timeout: float = 30, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


class Hub:
    def __init__(self, base: Path, *extra: str, env: dict[str, str] | None = None) -> None:
        self.server = Server(base / "hub", *extra, env=env).start()
        self.admin = self.server.admin_token
        self.http = self.server.client(self.admin)

    @property
    def url(self) -> str:
        return self.server.url

    def enrol(self, name: str, key: str) -> str:
        answer = self.http.post("/v1/federation/nodes", json={"name": name, "key": key})
        assert answer.status_code == 201, answer.text
        return answer.json()["token"]

    def position(self, name: str) -> dict[str, Any]:
        answer = self.http.get(f"/v1/federation/nodes/{name}/position")
        assert answer.status_code == 200, answer.text
        return answer.json()

    def federated(self) -> list[dict[str, Any]]:
        """Every node event in the hub's log, in hub order."""
        size = self.http.get("/healthz").json()["size"]
        events = []
        start = 0
        while start < size:
            rows = self.http.get("/v1/log/entries", params={"start": start, "end": size}).json()["entries"]
            for row in rows:
                event = orjson.loads(base64.b64decode(row["data"]))
                if "federation" in (event.get("attributes") or {}) and event["action"] != "federation.alert":
                    events.append(event)
            start += len(rows)
        return events

    def stop(self) -> None:
        self.http.close()
        self.server.stop()


class NodeProc:
    """A node: its own data dir and log, forwarding to the hub under its name."""

    def __init__(self, base: Path, name: str, hub: Hub, env: dict[str, str] | None = None) -> None:
        self.name = name
        data = base / name
        self.admin = run_cli("init", "--data", str(data), "--origin", f"auditfed.test/{name}",
                             check=True).stdout.strip()
        self.key = node_key(data)
        self.token = hub.enrol(name, self.key)
        self.server = Server(data, "--node-name", name, "--upstream", hub.url,
                             "--upstream-token", self.token,
                             env={"AUDITFED_UPSTREAM_HEARTBEAT": "0.5", **(env or {})})
        self.server.admin_token = self.admin
        self.server.start()
        self.source = self.server.token("source", service=f"svc-{name}")
        self.http = self.server.client(self.admin)

    @property
    def data_dir(self) -> Path:
        return self.server.data_dir

    def send(self, count: int, *, trace_id: str | None = None, service: str | None = None) -> list[str]:
        ids = [str(uuid.uuid4()) for _ in range(count)]
        events = []
        for i, event_id in enumerate(ids):
            event: dict[str, Any] = {"id": event_id, "action": "db.query", "actor": {"id": f"user{i % 7}"},
                                     "resource": {"type": "table", "id": "billing.invoices"}}
            if trace_id:
                event["trace"] = {"trace_id": trace_id, "span_id": f"{i + 1:016x}"}
            events.append(event)
        with httpx.Client(base_url=self.server.url, timeout=60,
                          headers={"Authorization": f"Bearer {self.source}"}) as client:
            for start in range(0, count, 1000):
                answer = client.post("/v1/events", json=events[start : start + 1000])
                assert answer.status_code == 200, answer.text
        return ids

    def size(self) -> int:
        return self.http.get("/healthz").json()["size"]

    def restart(self) -> None:
        self.http.close()
        self.server.start()
        self.http = self.server.client(self.admin)

    def stop(self) -> None:
        self.http.close()
        self.server.stop()


def caught_up(hub: Hub, *nodes: NodeProc) -> bool:
    return all(hub.position(n.name)["position"] >= n.size() for n in nodes)


def assert_exactly_once(hub: Hub, *nodes: NodeProc) -> None:
    events = hub.federated()
    for node in nodes:
        mine = [e for e in events if e["attributes"]["federation"]["node"] == node.name]
        indexes = [e["attributes"]["federation"]["node_index"] for e in mine]
        assert sorted(indexes) == list(range(node.size())), f"{node.name}: not every index exactly once"
        assert len({e["id"] for e in mine}) == len(mine)


