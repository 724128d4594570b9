"""The SQLite query index keeps event ids and trace ids as 64-bit keys: matches are
confirmed on the value, and an index of the earlier layout is rebuilt from the log."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from support.server import Server

from auditfed.store.base import EntryRow
from auditfed.store.filters import Query, Term, index_key
from auditfed.store.sqlite import INDEX_MIGRATIONS, SQLiteStore


def _row(event_id: str, trace_id: str, *, id_key: int, trace_key: int, service: str = "svc") -> EntryRow:
    return EntryRow(b"{}", bytes(32), service, event_id, "2026-11-28T00:00:00Z", "a.b", "u", None,
                    None, trace_id, None, "success", id_key, trace_key)


def test_rows_sharing_a_key_are_told_apart_by_their_value(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "log.db", fsync=False)
    try:
        # Force what BLAKE2b makes vanishingly rare: two ids, and two traces, on one key.
        shared_id, shared_trace = index_key("evt-b"), index_key("trace-b")
        rows = [_row("evt-a", "trace-a", id_key=shared_id, trace_key=shared_trace),
                _row("evt-b", "trace-b", id_key=shared_id, trace_key=shared_trace)]
        with store.transaction() as tx:
            tx.append_entries(0, rows)
        with store.index_transaction() as tx:
            tx.index_entries(0, rows)
        with store.transaction() as tx:
            asked = [_row("evt-b", "t", id_key=shared_id, trace_key=0),
                     _row("evt-b", "t", id_key=shared_id, trace_key=0, service="other"),
                     _row("evt-c", "t", id_key=index_key("evt-c"), trace_key=0)]
            assert tx.existing_indexes(asked) == {("svc", "evt-b"): 1}
        assert [i for i, _ in store.search(Query(Term("id", "evt-b")))] == [1]
        assert [i for i, _ in store.search(Query(Term("trace", "trace-b")))] == [1]
        assert [i for i, _ in store.search(Query(Term("trace", "trace-*")))] == [1, 0]
    finally:
        store.close()


def test_an_index_of_the_earlier_layout_is_rebuilt_from_the_log(tmp_path: Path) -> None:
    events = [{"id": f"evt-{n}", "action": "db.read", "actor": {"id": "ann"},
               "trace": {"trace_id": f"{n:032x}", "span_id": f"{n + 1:016x}"}} for n in range(1, 51)]
    server = Server(tmp_path / "data").start()
    token = server.token("source", service="billing")
    with server.client(token) as http:
        stored = {r["id"]: r["index"] for r in http.post("/v1/events", json=events).json()["results"]}
    server.stop()
    assert None not in stored.values()

    # The index file as the previous release left it: text keys, fully indexed.
    index_path = tmp_path / "data" / "auditfed.index.db"
    index_path.unlink()
    for suffix in ("-wal", "-shm"):
        Path(f"{index_path}{suffix}").unlink(missing_ok=True)
    old = sqlite3.connect(index_path, isolation_level=None)
    old.executescript(INDEX_MIGRATIONS[0])
    old.execute("PRAGMA user_version=1")
    old.execute("INSERT INTO event_index VALUES (1, 'billing', 'evt-1', '2026-01-01T00:00:00Z', 'x', 'u',"
                " NULL, NULL, NULL, NULL, 'success')")
    old.execute("INSERT INTO index_state VALUES ('indexed_size', '51')")
    old.close()

    server.start()
    try:
        with server.client(server.admin_token) as http:
            found = http.get("/v1/events", params={"q": "id:evt-7"}).json()["events"]
            assert [(e["index"], e["event"]["id"]) for e in found] == [(stored["evt-7"], "evt-7")]
            found = http.get("/v1/events", params={"q": f"trace:{7:032x}"}).json()["events"]
            assert [(e["index"], e["event"]["id"]) for e in found] == [(stored["evt-7"], "evt-7")]
        with server.client(token) as http:
            again = http.post("/v1/events", json=events[:3]).json()["results"]
            assert [(r["status"], r["index"]) for r in again] == [
                ("duplicate", stored[e["id"]]) for e in events[:3]]
        assert server.indexed_size() > max(stored.values())
    finally:
        server.stop()
