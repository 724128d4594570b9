"""pgaudit: a real PostgreSQL 15 with pgaudit, its real logs, and pgaudit's own output."""

from __future__ import annotations

import re

import psycopg
import pytest

from auditfed.event import validate_event
from auditfed.sources import decode
from auditfed.sources.pgaudit import compile_prefix, parse_audit

pytestmark = pytest.mark.postgres

# (user, statement, class, command, object type, object name)
STATEMENTS = [
    ("alice", "SELECT id, owner FROM accounts", "READ", "SELECT", "TABLE", "public.accounts"),
    ("alice", "INSERT INTO accounts VALUES (1, 'alice')", "WRITE", "INSERT", "TABLE",
     "public.accounts"),
    ("alice", "UPDATE accounts\n   SET owner = 'a, \"quoted\" owner'\n WHERE id = 1", "WRITE",
     "UPDATE", "TABLE", "public.accounts"),
    ("bob", "CREATE TABLE bob_notes (id int, note text)", "DDL", "CREATE TABLE", "TABLE",
     "public.bob_notes"),
    ("bob", "INSERT INTO bob_notes VALUES (1, 'hello')", "WRITE", "INSERT", "TABLE",
     "public.bob_notes"),
    ("bob", "SELECT count(*) FROM accounts", "READ", "SELECT", "TABLE", "public.accounts"),
    ("bob", "DELETE FROM accounts WHERE id = 1", "WRITE", "DELETE", "TABLE", "public.accounts"),
    ("alice", "DROP TABLE IF EXISTS alice_tmp", "DDL", "DROP TABLE", "", ""),
]


@pytest.fixture(scope="module")
def audited(pgaudit_server):
    """Run the statements as two database users; return the server's log files' text."""
    pg = pgaudit_server
    with psycopg.connect(pg.conninfo(), autocommit=True) as conn:
        conn.execute("CREATE DATABASE appdb")
    with psycopg.connect(pg.conninfo(dbname="appdb"), autocommit=True) as conn:
        conn.execute("CREATE EXTENSION pgaudit")  # its event triggers name DDL objects
        for user in ("alice", "bob"):
            conn.execute(f"CREATE ROLE {user} LOGIN")
        conn.execute("CREATE TABLE accounts (id int, owner text)")
        conn.execute("GRANT ALL ON accounts TO alice, bob")
        conn.execute("GRANT CREATE ON SCHEMA public TO alice, bob")
    for user, statement, *_ in STATEMENTS:
        with psycopg.connect(pg.conninfo(user=user, dbname="appdb"), autocommit=True) as conn:
            conn.execute(statement)
    with psycopg.connect(pg.conninfo(dbname="appdb"), autocommit=True) as conn:
        conn.execute("SELECT 'end-of-test-marker'")  # not audited (no relation): a LOG line
        conn.execute("CREATE TABLE zz_marker (id int)")
    stderr = pg.wait_for_log("stderr", "public.zz_marker")
    jsonlog = pg.wait_for_log("jsonlog", "public.zz_marker")
    return stderr, jsonlog


def _check(events):
    mine = [e for e in events if e["actor"]["id"] in ("alice", "bob")]
    got = [(e["actor"]["id"], e["attributes"]["pgaudit.class"],
            e["attributes"]["pgaudit.command"], e.get("resource", {}).get("id"))
           for e in mine]
    want = [(u, c, cmd, obj or "appdb") for u, _s, c, cmd, _t, obj in STATEMENTS]
    assert got == want
    for event, (_u, statement, klass, command, otype, obj) in zip(mine, STATEMENTS, strict=True):
        assert validate_event(event) == event
        assert event["action"] == f"db.{klass.lower()}.{command.lower().replace(' ', '_')}"
        assert event["attributes"]["db.name"] == "appdb"
        assert event["attributes"]["db.statement"] == statement
        assert event["source"] == {"service": "postgresql", "kind": "pgaudit"}
        assert event["outcome"] == "success"
        if obj:
            assert event["resource"] == {"type": otype.lower(), "id": obj,
                                         "name": obj.split(".")[-1]}
        else:
            assert event["resource"] == {"type": "database", "id": "appdb", "name": "appdb"}
        assert event["time"].endswith("Z")
    return mine


def test_stderr_log_of_a_real_server(audited):
    stderr, _ = audited
    decoded = decode("pgaudit", stderr.encode(), "text/plain",
                     {"X-Pgaudit-Skip-Non-Audit": "true"})
    assert decoded.errors == []
    assert decoded.skipped > 0  # startup and other non-audit LOG lines
    mine = _check(decoded.events)
    # without asking to skip them, the non-audit entries are per-record errors
    strict = decode("pgaudit", stderr.encode(), "text/plain", {})
    assert strict.events == decoded.events
    assert len(strict.errors) == decoded.skipped
    assert all("not a pgaudit 'AUDIT:' message" in e.message for e in strict.errors)
    assert all("id" in e for e in mine)
    assert len({e["id"] for e in decoded.events}) == len(decoded.events)
    # the multi-line statement was one entry with tab-continued lines in the file
    assert "\n\t   SET owner" in stderr


def test_jsonlog_of_a_real_server(audited):
    _, jsonlog = audited
    decoded = decode("pgaudit", jsonlog.encode(), "application/x-ndjson", {},
                     options={"skip_non_audit": True})
    assert decoded.errors == []
    mine = _check(decoded.events)
    for event in mine:
        assert event["actor"]["ip"] == "127.0.0.1"
        assert event["actor"]["session"]
        assert event["original"]["message"].startswith("AUDIT: ")


def test_both_logs_agree(audited):
    stderr, jsonlog = audited
    a = decode("pgaudit", stderr.encode(), None, {}).events
    b = decode("pgaudit", jsonlog.encode(), None, {}).events
    assert a
    assert [(e["action"], e["actor"]["id"], e.get("resource")) for e in a] == [
        (e["action"], e["actor"]["id"], e.get("resource")) for e in b]


def test_pgaudit_regression_output(data_dir):
    """pgaudit's own expected output: psql's NOTICE/WARNING echo of every AUDIT message."""
    text = (data_dir / "pgaudit" / "pgaudit.out").read_text()
    # give each server message the prefix a server log would have
    prefixed = re.sub(r"(?m)^(NOTICE|WARNING|ERROR|LOG|INFO):  ",
                      r"2026-11-27 10:00:00.000 UTC [4242] regress@contrib_regression \1:  ", text)
    decoded = decode("pgaudit", prefixed.encode(), None, {})
    events = decoded.events
    assert len(events) == text.count("AUDIT: ")
    for event in events:
        assert validate_event(event) == event
        assert event["actor"]["id"] == "regress"
        assert event["action"].startswith("db.")
    classes = {e["attributes"]["pgaudit.class"] for e in events}
    assert {"READ", "WRITE", "DDL", "ROLE", "MISC", "FUNCTION"} <= classes
    # multi-line quoted statements are whole
    create = next(e for e in events if e.get("resource", {}).get("id") == "public.test"
                  and e["attributes"]["pgaudit.command"] == "CREATE TABLE")
    assert create["attributes"]["db.statement"].count("\n") >= 1
    # psql's echo of the SQL script is not a log line, its ERRORs are not AUDIT entries:
    # per-line errors, nothing else lost
    assert all("not a PostgreSQL log line" in e.message or "not a pgaudit" in e.message
               for e in decoded.errors)


def test_configurable_prefix_and_regex():
    prefix = "%t:%r:%u@%d:[%p]:%c:"
    line = ("2026-11-27 10:00:00 UTC:10.0.0.7(51234):carol@sales:[777]:6b09d20f.256e:"
            "LOG:  AUDIT: OBJECT,3,1,READ,SELECT,TABLE,public.orders,select 1,<none>")
    [event] = decode("pgaudit", line.encode(), None, {}, options={"log_line_prefix": prefix}).events
    assert event["actor"] == {"id": "carol", "type": "user", "session": "6b09d20f.256e",
                              "ip": "10.0.0.7"}
    assert event["attributes"]["db.name"] == "sales"
    assert event["resource"]["id"] == "public.orders"
    assert event["time"] == "2026-11-27T10:00:00.000000Z"
    assert event["id"] == "pgaudit:6b09d20f.256e:3:1:OBJECT:public.orders"
    # the same via a header, and via a regex
    [again] = decode("pgaudit", line.encode(), None,
                     {"X-Pgaudit-Log-Line-Prefix": prefix}).events
    assert again == event
    regex = (r"(?P<timestamp>\S+ \S+ \S+):(?P<remote_host>[^(]+)\(\d+\):(?P<user>[^@]+)@"
             r"(?P<database>[^:]+):\[(?P<pid>\d+)\]:(?P<session>[^:]+):")
    [third] = decode("pgaudit", line.encode(), None, {}, options={"prefix_regex": regex}).events
    assert third == event
    assert compile_prefix("%m [%p] %q%u@%d ").match(
        "2026-11-27 18:55:11.040 UTC [9570] LOG:  starting").group("user") is None


def test_not_pgaudit_lines_are_per_record_errors():
    good = ("2026-11-27 18:55:11.148 UTC [9582] alice@appdb LOG:  AUDIT: SESSION,1,1,READ,"
            "SELECT,TABLE,public.accounts,SELECT 1,<not logged>")
    body = "\n".join([
        good,
        "this is not a log line at all",
        "2026-11-27 18:55:11.149 UTC [9582] alice@appdb LOG:  AUDIT: SESSION,broken",
        "2026-11-27 18:55:11.150 UTC [9582] alice@appdb LOG:  duration: 0.1 ms",
        '{"user": "bob", "dbname": "appdb", "message": "AUDIT: SESSION,1,1,WRITE,INSERT,TABLE,'
        'public.t,insert,<none>", "timestamp": "2026-11-27 18:55:11.151 UTC", "pid": 1}',
        '{"broken json',
        good.replace("alice@appdb", "@"),
    ])
    decoded = decode("pgaudit", body.encode(), None, {})
    assert [e["actor"]["id"] for e in decoded.events] == ["alice", "bob"]
    errors = {e.position: e.message for e in decoded.errors}
    assert set(errors) == {1, 2, 3, 5, 6}
    assert "not a pgaudit 'AUDIT:' message" in errors[3]
    lenient = decode("pgaudit", body.encode(), None, {}, options={"skip_non_audit": True})
    assert lenient.skipped == 1
    assert {e.position for e in lenient.errors} == {1, 2, 5, 6}
    assert "not a PostgreSQL log line" in errors[1]
    assert "fields" in errors[2]
    assert "invalid jsonlog" in errors[5]
    assert "%u" in errors[6]


def test_parse_audit_fields():
    fields = parse_audit('AUDIT: SESSION,5,2,WRITE,UPDATE,TABLE,public.t,"UPDATE t\n SET a = 1",<none>')
    assert fields["statement"] == "UPDATE t\n SET a = 1"
    assert fields["class"] == "WRITE"
