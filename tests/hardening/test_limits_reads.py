"""Reads whose memory does not grow with result size (issue 16, item 2).

A page holds at most ``max_response_bytes`` of events (at least one); clients page on.
Measured on a real server subprocess: its peak RSS (VmHWM, reset before each read)
while it answers reads over 40 events of 4 MB each.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from support.server import Server, run_cli

from auditfed.config import Settings

BIG_EVENTS = 40
BIG_EVENT_BYTES = 4 * 1024 * 1024
SMALL_EVENTS = 250
BUDGET = 65_536
TRACE = "7" * 32


def _env() -> dict[str, str]:
    env = {"AUDITFED_MAX_RESPONSE_BYTES": str(BUDGET)}
    # Events stored before a per-event cap existed (or with a higher cap) must stay
    # readable within the bound: lift any per-event cap for this test.
    for name in Settings.model_fields:
        if "event" in name and name.endswith("bytes"):
            env[f"AUDITFED_{name.upper()}"] = str(16 * 1024 * 1024)
    env["AUDITFED_DIRECTORY"] = json.dumps({"principals": {"hoarder@corp.example": ["app:hoarder"]}})
    return env


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = Server(tmp_path_factory.mktemp("reads") / "data", env=_env()).start()
    with running.client(running.admin_token) as admin:
        source = admin.post("/v1/tokens", json={"role": "source", "service": "reads"}).json()["token"]
        running.auditor = admin.post("/v1/tokens", json={"role": "auditor"}).json()["token"]  # type: ignore[attr-defined]
    with running.client(source) as http:
        small = [{"action": "page.test", "actor": {"id": "pager"}, "attributes": {"n": n, "pad": "p" * 2000}}
                 for n in range(SMALL_EVENTS)]
        assert http.post("/v1/events", json=small).json()["accepted"] == SMALL_EVENTS
        for n in range(BIG_EVENTS):
            big = {"action": "big.blob", "actor": {"id": "hoarder"},  # the directory names the principal
                   "trace": {"trace_id": TRACE, "span_id": f"{n + 1:016x}"},
                   "attributes": {"n": n, "blob": "b" * BIG_EVENT_BYTES}}
            answer = http.post("/v1/events", json=[big])
            assert answer.status_code == 200, answer.text[:300]
    yield running
    running.stop()


def _status(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no {field}")


def peak_growth_mb(server: Server, read: callable) -> float:  # type: ignore[valid-type]
    """How far the server's peak RSS rose above its current RSS while ``read`` ran."""
    assert server.process is not None
    pid = server.process.pid
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    before = _status(pid, "VmRSS")
    read()
    return _status(pid, "VmHWM") - before


def auditor(server: Server) -> httpx.Client:
    return server.client(server.auditor)  # type: ignore[attr-defined]


def test_search_over_large_events_stays_bounded(server: Server) -> None:
    pages: list[dict] = []

    def search() -> None:
        with auditor(server) as http:
            pages.append(http.get("/v1/events", params={"q": "action:big.blob", "limit": 1000}).json())

    grown = peak_growth_mb(server, search)
    assert grown < 100, f"one search grew the server by {grown:.0f} MB"  # ~700 MB unbounded
    assert len(pages[0]["events"]) == 1  # one 4 MB event is over the budget: it comes alone
    assert pages[0]["next_cursor"] is not None


@pytest.mark.parametrize("path", [f"/v1/traces/{TRACE}", "/v1/principals/hoarder@corp.example/timeline"])
def test_answers_over_large_events_stay_bounded(server: Server, path: str) -> None:
    answers: list[dict] = []

    def read() -> None:
        with auditor(server) as http:
            answer = http.get(path, params={"limit": 1000} if "timeline" in path else None)
            assert answer.status_code == 200, answer.text[:300]
            answers.append(answer.json())

    grown = peak_growth_mb(server, read)
    assert grown < 100, f"{path} grew the server by {grown:.0f} MB"
    assert answers[0]["more"] is True


def test_evidence_export_streams_in_bounded_memory(server: Server) -> None:
    lines: list[int] = []

    def export() -> None:
        with auditor(server) as http, http.stream("POST", "/v1/evidence", json={"query": "action:big.blob"}) as r:
            assert r.status_code == 200
            lines.extend(len(line) for line in r.iter_lines())

    grown = peak_growth_mb(server, export)
    assert grown < 100, f"the export grew the server by {grown:.0f} MB"
    assert sum(1 for n in lines if n > BIG_EVENT_BYTES) == BIG_EVENTS


@pytest.mark.parametrize("order", ["newest", "oldest"])
def test_search_pages_return_every_event_once(server: Server, order: str) -> None:
    seen: list[int] = []
    short_pages = 0
    with auditor(server) as http:
        cursor = None
        for _ in range(SMALL_EVENTS):
            params = {"q": "action:page.test", "limit": 100, "order": order}
            if cursor is not None:
                params["cursor"] = cursor
            page = http.get("/v1/events", params=params).json()
            seen += [e["index"] for e in page["events"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
            short_pages += len(page["events"]) < 100
    assert short_pages > 0, "the byte budget never cut a page"
    assert len(seen) == len(set(seen)) == SMALL_EVENTS
    assert seen == sorted(seen, reverse=order == "newest")


def test_cli_search_pages_on_when_the_server_returns_fewer(server: Server) -> None:
    result = run_cli("search", "action:page.test", "--limit", "1000", "--json", "--url", server.url,
                     "--token", server.auditor, check=True)  # type: ignore[attr-defined]
    indexes = [row["index"] for row in json.loads(result.stdout)]
    assert len(indexes) == len(set(indexes)) == SMALL_EVENTS


def test_log_entries_pages_return_every_entry_once(server: Server) -> None:
    with auditor(server) as http:
        size = int(http.get("/v1/log/checkpoint").text.splitlines()[1])
        position, pages = 0, 0
        while position < size:
            entries = http.get("/v1/log/entries", params={"start": position, "end": size}).json()["entries"]
            assert entries, f"no entries at {position}"
            for entry in entries:
                assert entry["index"] == position
                assert len(base64.b64decode(entry["data"])) > 0
                position += 1
            pages += 1
    assert pages > size // 1000 + 1  # the byte budget cut pages below 1,000 entries
