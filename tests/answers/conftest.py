"""Fixtures of the answers' tests: a real server (with the answers wired in) and the CLI."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from support.server import Server

from auditfed.demo import request_scenario

from .helpers import LAUNCH

DIRECTORY = {"principals": {"alice@corp.example": ["github:alice-gh", "pg:alice_rw", "app:alice"]}}


def run(*args: str, env: dict[str, str] | None = None, check: bool = False,
        timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """The ``auditfed`` CLI as a user runs it (with the answers' commands)."""
    result = subprocess.run(
        [*LAUNCH, *args], capture_output=True, text=True, timeout=timeout,
        env={**os.environ, "NO_COLOR": "1", "COLUMNS": "200", **(env or {})},
    )
    if check and result.returncode != 0:
        raise AssertionError(f"auditfed {' '.join(args)} failed: {result.stderr}{result.stdout}")
    return result


class AnswersServer(Server):
    """``auditfed serve`` through the launcher, so the answers' routes exist."""

    def start(self, timeout: float = 30) -> AnswersServer:
        import json

        if not (self.data_dir / "log.key").exists():
            self.admin_token = run("init", "--data", str(self.data_dir), check=True).stdout.strip()
        log = self.log_path.open("ab")
        env = {**os.environ, "AUDITFED_TEST_DIRECTORY": json.dumps(DIRECTORY), **self.env}
        self.process = subprocess.Popen(
            [*LAUNCH, "serve", "--data", str(self.data_dir), "--listen", f"127.0.0.1:{self.port}", *self.extra],
            stdout=log, stderr=log, env=env,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {self.log_path.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise RuntimeError("server did not start in time")


@pytest.fixture(scope="module")
def answers_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AnswersServer]:
    srv = AnswersServer(tmp_path_factory.mktemp("answers") / "data").start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def auditor(answers_server: AnswersServer) -> str:
    return answers_server.token("auditor")


@pytest.fixture(scope="module")
def scenario(answers_server: AnswersServer) -> dict[str, Any]:
    """The demo request (4 services, one trace) plus changes of a config, sent as admin."""
    now = datetime.now(UTC) - timedelta(minutes=5)
    request = request_scenario(now)
    changes = [
        {"time": (now + timedelta(seconds=1)).isoformat(), "action": "config.update", "outcome": "success",
         "actor": {"id": "bob", "type": "user", "principal": "bob@corp.example", "ip": "198.51.100.4"},
         "resource": {"type": "config", "id": "billing-api/rate-limits"}, "reason": "CHG-1 raise limits",
         "source": {"service": "billing-api", "environment": "prod-eu"}},
        {"time": (now + timedelta(seconds=2)).isoformat(), "action": "config.update", "outcome": "success",
         "actor": {"id": "carol", "type": "user", "principal": "carol@corp.example", "ip": "198.51.100.5"},
         "resource": {"type": "config", "id": "billing-api/rate-limits"},
         "source": {"service": "billing-api", "environment": "prod-eu"}},
    ]
    with answers_server.client(answers_server.admin_token) as http:
        response = http.post("/v1/events", json=request + changes)
        assert response.status_code == 200, response.text
        indexes = [r["index"] for r in response.json()["results"]]
    return {"trace_id": request[0]["trace"]["trace_id"], "request": request, "changes": changes,
            "indexes": indexes, "invoice": request[1]["resource"]["id"], "data": Path(answers_server.data_dir)}
