"""Fixtures of the answers' tests: a real server with a principal directory, and the CLI."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from support.server import Server, run_cli

from auditfed.demo import request_scenario

run = run_cli
#: Principals come from the server's directory, never from a producer's event (a
#: producer's ``actor.principal`` is kept as ``actor.claimed.principal``).
DIRECTORY = {"principals": {"alice@corp.example": ["github:alice-gh", "pg:alice_rw", "app:alice", "app:alice_rw"],
                            "bob@corp.example": ["app:bob"], "carol@corp.example": ["app:carol"]}}


#: The answers' tests use plain servers; the alias keeps their annotations readable.
AnswersServer = Server


@pytest.fixture(scope="module")
def answers_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AnswersServer]:
    base = tmp_path_factory.mktemp("answers")
    config = base / "auditfed.toml"
    config.write_text("[directory.principals]\n" + "".join(  # a JSON array of strings is TOML
        f'"{principal}" = {json.dumps(aliases)}\n' for principal, aliases in DIRECTORY["principals"].items()))
    srv = Server(base / "data", "--config", str(config)).start()
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
