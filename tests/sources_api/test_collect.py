"""``auditfed collect`` against a real server: rotation, truncation, restarts, pgaudit.

Lines are auditfed events *without* ids (the server assigns them), so a line sent twice
would be stored twice and a lost line would be missing: the stored ``request_id`` values
must be exactly the lines written, each once.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import orjson
from sources_api.conftest import events_of
from support.server import AUDITFED, Server, run_cli

from auditfed.cli.client import Client
from auditfed.cli.collect import Shipper, with_ids
from auditfed.sources import Collector


def write(path: Path, start: int, count: int, mode: str = "a") -> int:
    with path.open(mode) as fh:
        for n in range(start, start + count):
            fh.write(orjson.dumps({"action": "app.line", "actor": {"id": "svc"},
                                   "request_id": f"line-{n}"}).decode() + "\n")
    return start + count


def stored_lines(server: Server, admin: str, service: str) -> Counter:
    return Counter(e["request_id"] for _, e in events_of(server, admin)
                   if e["source"]["service"] == service)


def collect_once(server: Server, token: str, state: Path, *files: Path, fmt: str = "ndjson",
                 extra: tuple[str, ...] = ()) -> dict:
    result = run_cli("collect", *map(str, files), "--format", fmt, "--url", server.url,
                     "--token", token, "--state", str(state), "--once", "--json", *extra)
    assert result.returncode == 0, result.stderr
    return orjson.loads(result.stdout)


def test_rotation_truncation_and_restarts(server: Server, admin: str, tmp_path: Path) -> None:
    token = server.token("source", service="collect-once")
    log, state = tmp_path / "app.log", tmp_path / "state.json"
    n = write(log, 0, 5, "w")
    assert collect_once(server, token, state, log)["records"] == 5
    assert stored_lines(server, admin, "collect-once") == Counter(f"line-{i}" for i in range(5))
    # more lines, then a rotation by rename; the old file still gets lines after it
    n = write(log, n, 3)
    log.rename(tmp_path / "app.log.1")
    n = write(tmp_path / "app.log.1", n, 2)
    n = write(log, n, 4, "w")
    collect_once(server, token, state, log)
    # copytruncate: copied away, truncated in place, then new lines (lines written
    # between the agent's last read and the truncation are only in the copy: agents
    # like Filebeat lose those too, so the agent reads before)
    n = write(log, n, 2)
    collect_once(server, token, state, log)
    shutil.copy(log, tmp_path / "app.log.2")
    with log.open("r+") as fh:
        fh.truncate(0)
    n = write(log, n, 3)
    collect_once(server, token, state, log)
    # truncated again, and refilled past the old offset before the agent looks
    with log.open("r+") as fh:
        fh.truncate(0)
    n = write(log, n, 30)
    collect_once(server, token, state, log)
    # a run with nothing new sends nothing
    assert collect_once(server, token, state, log)["records"] == 0
    got = stored_lines(server, admin, "collect-once")
    assert got == Counter(f"line-{i}" for i in range(n)), got
    assert max(got.values()) == 1


def _wait_for(server: Server, admin: str, service: str, count: int, timeout: float = 30) -> Counter:
    deadline = time.monotonic() + timeout
    while True:
        got = stored_lines(server, admin, service)
        if sum(got.values()) >= count or time.monotonic() > deadline:
            return got
        time.sleep(0.2)


def test_follow_rotate_kill_restart(server: Server, admin: str, tmp_path: Path) -> None:
    token = server.token("source", service="collect-follow")
    log, state = tmp_path / "audit.log", tmp_path / "state.json"
    n = write(log, 0, 10, "w")
    args = [*AUDITFED, "collect", str(log), "--format", "ndjson", "--url", server.url,
            "--token", token, "--state", str(state), "--interval", "0.1", "--batch-size", "7"]
    env = {**os.environ, "NO_COLOR": "1"}
    agent = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        assert sum(_wait_for(server, admin, "collect-follow", n).values()) == n
        n = write(log, n, 5)
        log.rename(tmp_path / "audit.log.1")  # rotated while the agent runs
        n = write(log, n, 6, "w")
        assert sum(_wait_for(server, admin, "collect-follow", n).values()) == n
        time.sleep(0.5)  # let it commit
        agent.send_signal(signal.SIGKILL)
        agent.wait(timeout=30)
        # written while the agent was down, including another rotation
        n = write(log, n, 4)
        log.rename(tmp_path / "audit.log.2")
        n = write(log, n, 3, "w")
        agent = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        got = _wait_for(server, admin, "collect-follow", n)
        time.sleep(0.5)
        agent.send_signal(signal.SIGTERM)  # a graceful stop prints its summary
        _out, err = agent.communicate(timeout=30)
        assert agent.returncode == 0, err
        assert b"shipped" in err
    finally:
        if agent.poll() is None:
            agent.kill()
    got = stored_lines(server, admin, "collect-follow")
    assert got == Counter(f"line-{i}" for i in range(n)), got


def test_a_batch_sent_again_after_a_crash_is_stored_once(server: Server, admin: str, tmp_path: Path) -> None:
    """The agent dies after the server acknowledged a batch, before it committed the
    offset: the restarted agent sends the batch again, and it is answered duplicate."""
    token = server.token("source", service="collect-crash")
    log, state = tmp_path / "audit.log", tmp_path / "state.json"
    write(log, 0, 5, "w")
    client = Client(server.url, token)
    try:
        first = Collector([log], state)
        [(path, records)] = first.poll()
        shipper = Shipper(client, "ndjson", {}, threading.Event())
        assert shipper.ship(path, with_ids(records, first.batch_id(path)))
        first.close()  # killed before commit
        n = write(log, 5, 2)
        again = Collector([log], state)
        [(path, records)] = again.poll()
        assert shipper.ship(path, with_ids(records, again.batch_id(path)))
        again.commit()
        again.close()
    finally:
        client.close()
    assert (shipper.summary["accepted"], shipper.summary["duplicates"]) == (n, 5)
    assert stored_lines(server, admin, "collect-crash") == Counter(f"line-{i}" for i in range(n))


def test_pgaudit_server_log(server: Server, admin: str, tmp_path: Path) -> None:
    token = server.token("source", service="collect-pg")
    log = tmp_path / "postgresql-15-main.log"
    prefix = "%m [%p] %q%u@%d "
    lines = [
        "2026-11-27 18:55:10.001 UTC [9570] LOG:  database system is ready to accept connections",
        "2026-11-27 18:55:11.148 UTC [9582] alice@appdb LOG:  AUDIT: SESSION,1,1,READ,SELECT,TABLE,"
        "public.accounts,SELECT id FROM accounts,<not logged>",
        "2026-11-27 18:55:11.200 UTC [9583] bob@appdb LOG:  AUDIT: SESSION,1,1,WRITE,UPDATE,TABLE,"
        "public.accounts,\"UPDATE accounts",
        "\t   SET owner = 'x'",
        "\t WHERE id = 1\",<not logged>",
        "2026-11-27 18:55:11.300 UTC [9583] bob@appdb LOG:  duration: 0.2 ms",
    ]
    log.write_text("\n".join(lines) + "\n")
    summary = collect_once(server, token, tmp_path / "pg-state.json", log, fmt="pgaudit",
                           extra=("--log-line-prefix", prefix))
    assert summary["accepted"] == 2 and summary["rejected"] == 0 and summary["skipped"] == 2
    events = [e for _, e in events_of(server, admin) if e["source"]["service"] == "collect-pg"]
    assert [(e["actor"]["id"], e["action"]) for e in events] == [
        ("alice", "db.read.select"), ("bob", "db.write.update")]
    assert events[1]["attributes"]["db.statement"] == "UPDATE accounts\n   SET owner = 'x'\n WHERE id = 1"
    # a line that is not a PostgreSQL log line: reported, the others kept, offset moves on
    with log.open("a") as fh:
        fh.write("garbage that is no log line\n" + lines[1].replace("SESSION,1,1", "SESSION,2,1") + "\n")
    again = collect_once(server, token, tmp_path / "pg-state.json", log, fmt="pgaudit",
                         extra=("--log-line-prefix", prefix))
    assert again["accepted"] == 1 and again["rejected"] == 1
    assert collect_once(server, token, tmp_path / "pg-state.json", log, fmt="pgaudit")["records"] == 0


def test_fatal_answers_stop_without_committing(server: Server, tmp_path: Path) -> None:
    log, state = tmp_path / "x.log", tmp_path / "state.json"
    write(log, 0, 2, "w")
    result = run_cli("collect", str(log), "--format", "ndjson", "--url", server.url,
                     "--token", "not-a-token", "--state", str(state), "--once")
    assert result.returncode == 1 and "401" in result.stderr
    with Collector([log], state) as after:  # nothing acknowledged, nothing committed
        assert after.position(log) is None
        assert after.poll() == [(str(log), log.read_bytes().splitlines())]
