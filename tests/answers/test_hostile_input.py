"""Hostile input never reaches SQL as text: clear 400s, and values only as bound parameters."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import pytest

from auditfed.errors import InvalidInput
from auditfed.query.language import MAX_DEPTH, MAX_LENGTH, MAX_TERMS, parse_query
from auditfed.query.reading import expr_depth, parse_checked
from auditfed.store.filters import Query, Term

from .conftest import AnswersServer
from .helpers import event, open_log

INJECTIONS = [
    "actor:\"'; DROP TABLE events; --\"",
    "resource:x' OR '1'='1",
    "action:a) OR 1=1 --",
    'actor:"alice\\" OR actor:\\"bob"',
    "id:1;DELETE FROM events",
    "service:*' UNION SELECT data FROM events --",
]


@pytest.mark.parametrize("text", INJECTIONS)
def test_sql_fragments_are_values_or_clear_errors(text: str, tmp_path: Path) -> None:
    with open_log(tmp_path) as log:
        log.append([event("db.query", "alice", resource={"id": "x"})])
        try:
            expr = parse_query(text)
        except InvalidInput as exc:
            assert exc.status == 400 and exc.detail
            return
        assert log.store.search(Query(expr)) == []  # matched literally: nothing has those values
        assert log.store.size() == 1 and len(log.store.search(Query(None))) == 1


@pytest.mark.parametrize("text", [
    "x" * (MAX_LENGTH + 1),
    " ".join(f"actor:u{i}" for i in range(MAX_TERMS + 1)),
    "(" * (MAX_DEPTH + 2) + "actor:a" + ")" * (MAX_DEPTH + 2),
    "actor:a OR OR actor:b",
    "(actor:a", "actor:a)", "actor:", "time>=yesterday", "action>=db", "nosuch:field", '"unterminated',
    "actor:a AND", "\x00",
])
def test_hostile_or_broken_queries_are_refused_clearly(text: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_query(text)
    assert caught.value.detail


@pytest.mark.parametrize("count", [17, 400, 1000])
def test_runs_of_not_are_bounded(count: int) -> None:
    with pytest.raises(InvalidInput, match="nested deeper"):
        parse_checked("NOT " * count + "actor:a")
    assert expr_depth(parse_checked("NOT " * 16 + "actor:a")) == 17  # type: ignore[arg-type]


def test_quotes_and_wildcards_are_literal_values() -> None:
    assert parse_query('actor:"o\'brien"') == Term("actor", "o'brien")
    assert parse_query('resource:"a b \\"c\\""') == Term("resource", 'a b "c"')
    assert parse_query("resource:[x]?").value == "[x]?"  # type: ignore[union-attr]


def test_events_endpoint_and_answers_refuse_hostile_input(answers_server: AnswersServer, auditor: str) -> None:
    with answers_server.client(answers_server.admin_token) as http:
        assert http.post("/v1/events", json={"action": "db.query", "actor": {"id": "alice"},
                                             "resource": {"id": "t"}, "source": {"service": "pg"}}).status_code == 200
    with answers_server.client(auditor) as http:
        for text in INJECTIONS:
            response = http.get("/v1/events", params={"q": text})
            assert response.status_code in (200, 400), (text, response.text)
            if response.status_code == 200:
                assert response.json()["events"] == []
            else:
                assert response.headers["content-type"].startswith("application/problem+json")
        for text in ("(" * 40 + "actor:a" + ")" * 40, " ".join(["actor:a"] * 150), "a" * 5000, "actor:a OR"):
            response = http.get("/v1/events", params={"q": text})
            assert response.status_code == 400, text
            assert response.json()["detail"]
        # values with SQL in them are just values
        for resource in ("'; DROP TABLE events; --", "x' OR '1'='1", "\" OR 1=1"):
            assert http.get("/v1/who-accessed", params={"resource": resource}).json()["count"] == 0
            assert http.get("/v1/who-changed", params={"resource": resource}).json()["count"] == 0
            timeline = http.get(f"/v1/principals/{quote(resource, safe='')}/timeline")
            assert timeline.status_code == 200 and timeline.json()["count"] == 0
        assert http.get("/v1/who-accessed", params={"resource": "x" * 2000}).status_code == 400
        assert http.get("/v1/who-accessed", params={"resource": "a\x01b"}).status_code == 400
        for trace in ("1' OR '1'='1", "*", "a b"):
            assert http.get(f"/v1/traces/{quote(trace, safe='')}").status_code == 400
            assert http.get(f"/v1/enforcement/{quote(trace, safe='')}").status_code == 400
        assert http.post("/v1/evidence", json={"query": "actor:\"'; DROP TABLE events; --\""}).status_code == 200
        for count in (400, 1000):  # the evidence endpoint parses with the bounded parser
            assert http.post("/v1/evidence", json={"query": "NOT " * count + "actor:a"}).status_code == 400
        # still all there
        assert len(http.get("/v1/events", params={"q": "actor:alice"}).json()["events"]) == 1


def test_events_endpoint_refuses_long_runs_of_not(answers_server: AnswersServer, auditor: str) -> None:
    with answers_server.client(auditor) as http:
        for count in (400, 1000):
            response = http.get("/v1/events", params={"q": "NOT " * count + "actor:a"})
            assert response.status_code == 400, (count, response.status_code)
