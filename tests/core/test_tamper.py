"""Tampering with the store is detected and pinpointed by ``auditfed verify``.

Each test runs on both stores: the SQLite file edited with sqlite3, the PostgreSQL
database edited with SQL, as someone with write access to the database would."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.server import Server, run_cli


@pytest.fixture
def sealed(tmp_path: Path, store: str | None) -> Server:
    """A server with 1,000 events and several checkpoints, stopped."""
    server = Server(tmp_path / "data", store=store).start()
    # With the init token: creating a token would be logged first (a meta-audit record).
    with server.client(server.admin_token) as http:
        for start in range(0, 1000, 250):
            events = [{"id": str(i), "action": "a.b", "actor": {"id": f"u{i}"}, "source": {"service": "svc"}}
                      for i in range(start, start + 250)]
            assert http.post("/v1/events", json=events).json()["accepted"] == 250
            http.get("/v1/log/checkpoint")
    server.stop()
    assert "ok: 1000 entries" in run_cli("verify", "--data", str(server.data_dir), check=True).stdout
    return server


def verify(server: Server) -> dict:
    result = run_cli("verify", "--data", str(server.data_dir), "--json")
    report = json.loads(result.stdout)
    assert (result.returncode == 1) == (not report["ok"])
    return report


def test_one_changed_byte_is_named(sealed: Server) -> None:
    [(data,)] = sealed.sql("SELECT data FROM events WHERE idx = 417")
    sealed.sql("UPDATE events SET data = ? WHERE idx = 417", (data.replace(b"u417", b"u418"),))
    report = verify(sealed)
    assert not report["ok"] and report["bad_index"] == 417 and "leaf hash differs" in report["problem"]


def test_a_deleted_row_is_named(sealed: Server) -> None:
    sealed.sql("DELETE FROM events WHERE idx = 603")
    report = verify(sealed)
    assert report["bad_index"] == 603 and "missing" in report["problem"]


def test_the_last_row_deleted_is_named(sealed: Server) -> None:
    sealed.sql("DELETE FROM events WHERE idx = 999")
    report = verify(sealed)
    assert report["bad_index"] == 999 and "missing" in report["problem"]


def test_two_swapped_rows_are_named(sealed: Server) -> None:
    if sealed.store_kind == "sqlite":
        sealed.sql("UPDATE events SET idx = -1 WHERE idx = 120")
        sealed.sql("UPDATE events SET idx = 120 WHERE idx = 860")
        sealed.sql("UPDATE events SET idx = 860 WHERE idx = -1")
    else:  # the partition key cannot go to -1: swap the rows' contents
        sealed.sql("UPDATE events SET data = CASE idx WHEN 120 THEN (SELECT data FROM events WHERE idx = 860)"
                   " ELSE (SELECT data FROM events WHERE idx = 120) END WHERE idx IN (120, 860)")
    report = verify(sealed)
    assert report["bad_index"] == 120


def test_a_rewritten_tile_is_named(sealed: Server) -> None:
    [(tile,)] = sealed.sql("SELECT hashes FROM tiles WHERE level = 0 AND idx = 2")
    forged = tile[:32 * 5] + bytes(32) + tile[32 * 6:]
    sealed.sql("UPDATE tiles SET hashes = ? WHERE level = 0 AND idx = 2", (forged,))
    report = verify(sealed)
    assert report["bad_index"] == 2 * 256 + 5 and "leaf hash differs" in report["problem"]


def test_entries_and_tiles_rewritten_together_break_the_signed_root(sealed: Server) -> None:
    from auditfed.ledger import TreeAppender, leaf_hash

    if sealed.store_kind == "sqlite":
        sealed.sql("UPDATE events SET data = CAST(replace(data, 'u700', 'x700') AS BLOB) WHERE idx = 700")
    else:
        sealed.sql("UPDATE events SET data = convert_to(replace(convert_from(data, 'UTF8'), 'u700', 'x700'),"
                   " 'UTF8') WHERE idx = 700")
    rows = sealed.sql("SELECT data FROM events ORDER BY idx")
    tree = TreeAppender.empty()
    tree.extend(leaf_hash(bytes(d)) for (d,) in rows)
    for (level, index), hashes in tree.take_dirty_tiles().items():
        sealed.sql("DELETE FROM tiles WHERE level = ? AND idx = ?", (level, index))
        sealed.sql("INSERT INTO tiles VALUES (?, ?, ?)", (level, index, hashes))
    report = verify(sealed)
    assert not report["ok"] and "checkpoint signed at size 750" in report["problem"]
    assert report["bad_index"] == 500


def test_a_forged_checkpoint_signature_is_detected(sealed: Server) -> None:
    [(note,)] = sealed.sql("SELECT note FROM checkpoints WHERE size = 500")
    sealed.sql("UPDATE checkpoints SET note = ? WHERE size = 500", (note.replace("\n500\n", "\n501\n"),))
    report = verify(sealed)
    assert not report["ok"] and "does not verify" in report["problem"]


def test_the_server_refuses_to_start_on_a_store_that_lost_signed_entries(sealed: Server) -> None:
    sealed.sql("DELETE FROM events WHERE idx >= 900")
    server = Server(sealed.data_dir, store=sealed.store)
    with pytest.raises(RuntimeError, match="entries were lost"):
        server.start(timeout=20)
