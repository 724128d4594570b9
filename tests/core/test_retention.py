"""Retention removes old entries' bytes; the log, its proofs and ``verify`` still hold.

On both stores, through the CLI (``auditfed retention``), the server's ``retention``
setting and the API (410 Gone for what was removed). PostgreSQL removes whole
partitions, so its databases here use partitions of 256 entries.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from support.server import Server, run_cli

from auditfed.errors import InvalidInput
from auditfed.ledger import Verifier, leaf_hash, verify_checkpoint, verify_inclusion
from auditfed.store import open_store
from auditfed.store.retention import apply_retention, first_index_observed_since, parse_age

EVENTS = 1000


def small_partitions(store: str | None) -> str | None:
    if store is None:
        return None
    return store + ("&" if "?" in store else "?") + "auditfed_partition_size=256"


def ingest(server: Server, start: int, count: int) -> None:
    # With the admin token made at init: a new token's creation would be logged first
    # (a meta-audit record, which retention keeps for retention_floor).
    with server.client(server.admin_token) as http:
        for first in range(start, start + count, 250):
            events = [{"id": str(i), "action": "a.b", "actor": {"id": f"u{i}"}, "source": {"service": "svc"}}
                      for i in range(first, first + 250)]
            assert http.post("/v1/events", json=events).json()["accepted"] == 250
            http.get("/v1/log/checkpoint")


def verifier_key(server: Server) -> str:
    return server.client().get("/v1/log/key").text.strip()


def cli(server: Server, *args: str) -> dict:
    store = ["--store", server.store] if server.store else []
    result = run_cli(*args, "--data", str(server.data_dir), *store, "--json", check=True)
    return json.loads(result.stdout)


@pytest.fixture
def running(tmp_path: Path, store: str | None) -> Iterator[Server]:
    server = Server(tmp_path / "data", store=small_partitions(store)).start()
    ingest(server, 0, EVENTS)
    yield server
    server.stop()


def test_removed_entries_are_gone_and_the_log_still_verifies(running: Server) -> None:
    admin = running.client(running.admin_token)
    # An auditor's evidence, taken before retention: entry 10's bytes.
    [kept_evidence] = admin.get("/v1/log/entries", params={"start": 10, "end": 11}).json()["entries"]
    evidence = base64.b64decode(kept_evidence["data"])

    planned = cli(running, "retention", "--before", "600", "--dry-run")
    # (reads are audited too: the log holds a few access records beyond the events)
    assert planned["size"] > EVENTS
    assert (planned["removed"], planned["retained_from"], planned["dry_run"]) == (600, 600, True)
    assert running.sql("SELECT MIN(idx) FROM events") == [(0,)]

    done = cli(running, "retention", "--before", "600")
    kept_from = 600 if running.store_kind == "sqlite" else 512  # whole partitions of 256
    assert (done["removed"], done["retained_from"], done["dry_run"]) == (kept_from, kept_from, False)
    # (+ 1: the run's own record, appended after it measured the log)
    assert running.sql("SELECT MIN(idx), COUNT(*) FROM events") == [(kept_from, done["size"] - kept_from + 1)]

    gone = admin.get("/v1/events/10")
    assert gone.status_code == 410 and gone.headers["content-type"] == "application/problem+json"
    assert gone.json()["retained_from"] == kept_from
    assert admin.get(f"/v1/events/{kept_from}").json()["event"]["id"] == str(kept_from)
    assert admin.get("/v1/log/entries", params={"start": 0, "end": 10}).status_code == 410
    assert admin.get("/v1/events", params={"q": "actor:u10"}).json()["events"] == []
    assert [e["index"] for e in admin.get("/v1/events", params={"q": "actor:u700"}).json()["events"]] == [700]
    assert f"auditfed_log_retained_from {float(kept_from)}" in admin.get("/metrics").text

    # The evidence still proves inclusion in a checkpoint signed after the removal.
    verifier = Verifier.from_key(verifier_key(running))
    checkpoint = verify_checkpoint(admin.get("/v1/log/checkpoint").text, verifier)
    proof = admin.get("/v1/log/proof/inclusion", params={"index": 10, "size": checkpoint.size}).json()
    verify_inclusion(leaf_hash(evidence), 10, checkpoint.size,
                     [base64.b64decode(h) for h in proof["hashes"]], checkpoint.root)

    refused = run_cli("proof", "inclusion", "10", "--data", str(running.data_dir))
    assert refused.returncode == 1 and "removed by retention" in refused.stderr + refused.stdout
    remote = run_cli("verify", "--url", running.url, "--token", running.admin_token, "--key",
                     verifier_key(running))
    assert remote.returncode != 0 and "removed by retention" in remote.stderr + remote.stdout
    assert "Traceback" not in remote.stderr

    report = cli(running, "verify")
    assert report["ok"], report
    assert report["entries"] > EVENTS and report["removed_by_retention"] == kept_from

    # What stays is still guarded: a changed kept entry is named.
    [(data,)] = running.sql("SELECT data FROM events WHERE idx = 800")
    running.sql("UPDATE events SET data = ? WHERE idx = 800", (data.replace(b"u800", b"u801"),))
    result = run_cli("verify", "--data", str(running.data_dir), *(["--store", running.store] if running.store else []))
    assert result.returncode == 1 and "index 800" in result.stdout


def test_retention_runs_while_the_server_ingests(running: Server) -> None:
    cli(running, "retention", "--before", "900")
    ingest(running, EVENTS, 500)  # and the server keeps appending and indexing
    admin = running.client(running.admin_token)
    # (1401: the run's own record went in before the new events)
    assert admin.get("/v1/events", params={"q": "actor:u1400"}).json()["events"][0]["index"] == 1401
    assert cli(running, "verify")["ok"]


def test_the_server_applies_its_retention_setting(tmp_path: Path, store: str | None) -> None:
    first = Server(tmp_path / "data", store=small_partitions(store)).start()
    ingest(first, 0, EVENTS)
    first.stop()
    time.sleep(1.1)
    # A retention shorter than the floor is refused at start (see tests/hardening/test_admin_*).
    server = Server(first.data_dir, "--retention", "1s", store=first.store,
                    env={"AUDITFED_RETENTION_FLOOR": "0"}).start()
    try:
        admin = server.client(first.admin_token)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            found = admin.get("/v1/events", params={"q": "action:auditfed.retention.apply"}).json()["events"]
            if found:
                break
            time.sleep(0.1)
        [record] = found
        removed = record["event"]["attributes"]["removed"]
        assert removed == (EVENTS - 1 if server.store_kind == "sqlite" else 768)  # the newest stays
        assert admin.get("/v1/events/0").status_code == 410
    finally:
        server.stop()
    assert cli(server, "verify")["ok"]


def test_age_finds_the_first_entry_observed_since_a_time(tmp_path: Path) -> None:
    server = Server(tmp_path / "data").start()
    ingest(server, 0, 500)
    time.sleep(0.05)
    between = datetime.now(UTC)
    time.sleep(0.05)
    ingest(server, 500, 500)
    server.stop()
    store = open_store(f"sqlite:///{server.data_dir / 'auditfed.db'}")
    try:
        assert first_index_observed_since(store, between) == 500
        assert first_index_observed_since(store, between - timedelta(days=1)) == 0
        planned = apply_retention(store, older_than=timedelta(days=1), dry_run=True)
        assert planned.removed == 0
        assert apply_retention(store, older_than=datetime.now(UTC) - between).retained_from == 500
        assert store.entries(499, 501) == store.entries(500, 501)
    finally:
        store.close()


@pytest.mark.parametrize("age", ["", "0d", "10", "-1d", "1.5d", "3 weeks", "1001y"])
def test_a_bad_age_is_refused(age: str) -> None:
    with pytest.raises(InvalidInput):
        parse_age(age)


def test_the_cli_refuses_bad_retention_arguments(tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    run_cli("init", "--data", data, check=True)
    for args in (["--older-than", "soon"], [], ["--before", "5", "--older-than", "1d"],
                 ["--before", "-3"]):
        result = run_cli("retention", "--data", data, *args)
        assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr
