"""Ingest workers and the query index file: real servers, real processes.

Bodies are prepared in worker processes by default (``ingest_workers``); the query
index lives in its own SQLite file and is rebuilt from the log when it is missing or
comes from an older layout.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import time
from pathlib import Path

import httpx
import pytest
from support.server import Server

from auditfed.ingest.workers import worker_count


def _events(prefix: str, count: int) -> list[dict]:
    return [{"id": f"{prefix}-{i}", "action": "db.read", "actor": {"id": f"user{i % 7}"},
             "resource": {"id": f"t{i % 3}"}} for i in range(count)]


def _workers_of(server: Server) -> list[int]:
    """Pids of the ingest worker processes serving ``server`` (children of its forkserver)."""
    assert server.process is not None
    children = _children(server.process.pid)
    return [pid for forkserver in children for pid in _children(forkserver)]


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return found


def _wait_for(condition, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False


def _post(server: Server, token: str, events: list[dict]) -> httpx.Response:
    return httpx.post(f"{server.url}/v1/events", json=events,
                      headers={"Authorization": f"Bearer {token}"}, timeout=30)


@pytest.fixture
def worker_server(tmp_path: Path):
    server = Server(tmp_path / "data", "--ingest-workers", "2").start()
    yield server
    server.stop()


def test_default_worker_count_follows_the_cores() -> None:
    from auditfed.config import Settings

    cores = len(os.sched_getaffinity(0))
    assert worker_count(Settings()) == (cores if cores > 1 else 0)
    assert worker_count(Settings(ingest_workers=0)) == 0
    assert worker_count(Settings(ingest_workers=3)) == 3


def test_a_dead_worker_is_replaced_and_nothing_is_lost(worker_server: Server) -> None:
    token = worker_server.token("source", service="billing")
    assert _post(worker_server, token, _events("a", 50)).json()["accepted"] == 50
    workers = _workers_of(worker_server)
    assert len(workers) == 2
    os.kill(workers[0], signal.SIGKILL)
    answer = _post(worker_server, token, _events("b", 50))
    assert answer.status_code == 200, answer.text
    assert answer.json()["accepted"] == 50
    again = _post(worker_server, token, _events("a", 50)).json()
    assert again["duplicates"] == 50  # the first batch is still known after the restart
    assert _wait_for(lambda: len(_workers_of(worker_server)) == 2)


def test_workers_exit_with_a_killed_server(worker_server: Server) -> None:
    token = worker_server.token("source", service="billing")
    assert _post(worker_server, token, _events("a", 10)).status_code == 200
    assert worker_server.process is not None
    helpers = _children(worker_server.process.pid)
    workers = _workers_of(worker_server)
    assert workers
    worker_server.kill(signal.SIGKILL)
    assert _wait_for(lambda: not any(Path(f"/proc/{pid}").exists() for pid in workers + helpers))


def test_inline_preparing_answers_like_the_workers(tmp_path: Path) -> None:
    answers = {}
    for workers in ("0", "2"):
        server = Server(tmp_path / f"data{workers}", "--ingest-workers", workers).start()
        try:
            token = server.token("source", service="billing")
            bad = {"action": "x", "actor": {"id": 5}}
            r = _post(server, token, [*_events("e", 3), bad])
            answers[workers] = (r.status_code, [
                {k: v for k, v in item.items() if k != "error"} for item in r.json()["results"]
            ])
            other = _post(server, token, [{"action": "x", "actor": {"id": "u"},
                                          "source": {"service": "payroll"}}])
            assert other.status_code == 403
            assert other.headers["content-type"] == "application/problem+json"
        finally:
            server.stop()
    assert answers["0"] == answers["2"]
    assert answers["0"][1][3]["status"] == "rejected"


def _search(server: Server, query: str) -> list[dict]:
    r = httpx.get(f"{server.url}/v1/events", params={"q": query},
                  headers={"Authorization": f"Bearer {server.admin_token}"}, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()["events"]


def _stopped_without_index(tmp_path: Path, events: int) -> tuple[Server, str]:
    """A server that stored ``events`` events, stopped, its index file deleted."""
    server = Server(tmp_path / "data", "--ingest-workers", "0").start()
    token = server.token("source", service="billing")
    assert _post(server, token, _events("e", events)).json()["accepted"] == events
    server.stop()
    for path in (tmp_path / "data").glob("auditfed.index.db*"):
        path.unlink()
    return server, token


def test_a_lost_index_file_is_rebuilt_from_the_log(tmp_path: Path) -> None:
    server, token = _stopped_without_index(tmp_path, 30)
    server.start()
    try:
        assert _wait_for(lambda: len(_search(server, 'actor:user1')) == 5)
        assert _post(server, token, _events("e", 30)).json()["duplicates"] == 30
    finally:
        server.stop()


def test_an_index_in_the_log_file_moves_to_its_own_file(tmp_path: Path) -> None:
    """Data dirs of the first layout kept ``event_index`` in the log's own file."""
    server, _ = _stopped_without_index(tmp_path, 20)
    log_file = sqlite3.connect(tmp_path / "data" / "auditfed.db", isolation_level=None)
    log_file.execute("CREATE TABLE event_index (idx INTEGER PRIMARY KEY)")
    log_file.execute("INSERT INTO meta (key, value) VALUES ('indexed_size', '20')")
    log_file.execute("DROP TABLE handed_over")  # added by migration 5, after that layout
    log_file.execute("PRAGMA user_version = 3")
    log_file.close()
    server.start()
    try:
        assert _wait_for(lambda: len(_search(server, "action:db.read")) == 20)
        tables = server.sql("SELECT name FROM main.sqlite_master WHERE name = 'event_index'")
        assert tables == []
    finally:
        server.stop()


def test_duplicates_are_found_in_the_index_whatever_the_id(tmp_path: Path) -> None:
    """After a restart the keys are only in the index: hostile ids must still match."""
    ids = ["plain", "nul\x00inside", "line\u2028sep", "emoji-\U0001f600", "quote\"and'\\", " "]
    events = [{"id": i, "action": "db.read", "actor": {"id": "u"}} for i in ids]
    server = Server(tmp_path / "data", "--ingest-workers", "0").start()
    token = server.token("source", service="billing")
    try:
        first = _post(server, token, events).json()
        assert first["accepted"] == len(ids)
        server.stop()
        server.start()
        assert _wait_for(lambda: server.indexed_size() >= len(ids))
        again = _post(server, token, events).json()
        assert again["duplicates"] == len(ids), again
        assert [r["index"] for r in again["results"]] == [r["index"] for r in first["results"]]
    finally:
        server.stop()
