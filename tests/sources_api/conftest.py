"""Helpers of the source API tests: test data, reading back what a real server stored."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import orjson
import pytest
from support.server import Server

DATA = Path(__file__).resolve().parent.parent / "data"
STRATUS = DATA / "cloudtrail" / "stratus-red-team"
K8S = DATA / "k8s-audit"
PGAUDIT_OUT = DATA / "pgaudit" / "pgaudit.out"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA


def entries(server: Server, token: str, start: int = 0) -> list[tuple[int, bytes]]:
    """Every leaf's data from ``start`` (through ``/v1/log/entries``, paging)."""
    out: list[tuple[int, bytes]] = []
    with server.client(token) as http:
        size = http.get("/healthz").json()["size"]
        while start < size:
            answer = http.get("/v1/log/entries", params={"start": start, "end": min(size, start + 1000)})
            assert answer.status_code == 200, answer.text
            got = answer.json()["entries"]
            out += [(e["index"], base64.b64decode(e["data"])) for e in got]
            start = got[-1]["index"] + 1
    return out


def events_of(server: Server, token: str, start: int = 0) -> list[tuple[int, dict[str, Any]]]:
    """Stored events (not auditfed's own access records) from ``start``."""
    out = []
    for index, data in entries(server, token, start):
        event = orjson.loads(data)
        if event["source"].get("kind") != "auditfed":
            out.append((index, event))
    return out


def store_bytes(server: Server) -> bytes:
    """Every byte the data dir holds (the SQLite file, its WAL, everything)."""
    return b"".join(p.read_bytes() for p in sorted(server.data_dir.rglob("*")) if p.is_file())
