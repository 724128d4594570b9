"""POST /v1/events through real HTTP: formats, idempotency, binding, bad input."""

from __future__ import annotations

import gzip
import uuid

import orjson
import pytest
from support.server import Server


def event(**fields: object) -> dict:
    return {"id": str(uuid.uuid4()), "action": "db.query", "actor": {"id": "alice"}, **fields}


def post(server: Server, token: str, body: bytes | object, **headers: str):
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    headers.setdefault("Content-Type", "application/json")
    with server.client(token) as http:
        return http.post("/v1/events", content=data, headers=headers)


def stored(server: Server, admin: str, index: int) -> dict:
    with server.client(admin) as http:
        return http.get(f"/v1/events/{index}").json()["event"]


def assert_problem(response, status: int, text: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == status and text in body["detail"], body
    return body


def test_one_object(server: Server, source_token: str, admin: str) -> None:
    sent = event(reason="CHG-1")
    r = post(server, source_token, sent)
    assert r.status_code == 200
    body = r.json()
    assert body["accepted"] == 1 and body["rejected"] == 0
    result = body["results"][0]
    assert result["status"] == "accepted" and result["id"] == sent["id"]
    got = stored(server, admin, result["index"])
    # The token's binding is written into source; observed_time set by the server.
    assert got["source"] == {"service": "billing-api", "environment": "prod-eu"}
    assert got["reason"] == "CHG-1" and got["observed_time"] and got["outcome"] == "unknown"


def test_array_ndjson_and_gzip(server: Server, source_token: str) -> None:
    array = [event() for _ in range(3)]
    assert post(server, source_token, array).json()["accepted"] == 3
    ndjson = b"\n".join(orjson.dumps(e) for e in [event() for _ in range(4)]) + b"\n"
    r = post(server, source_token, ndjson, **{"Content-Type": "application/x-ndjson"})
    assert r.json()["accepted"] == 4
    zipped = gzip.compress(orjson.dumps([event() for _ in range(5)]))
    r = post(server, source_token, zipped, **{"Content-Encoding": "gzip"})
    assert r.json()["accepted"] == 5


def test_resending_answers_duplicate_with_the_original_index(server: Server, source_token: str) -> None:
    first = event()
    original = post(server, source_token, first).json()["results"][0]["index"]
    again = post(server, source_token, [first, event(), first]).json()
    assert again["duplicates"] == 2 and again["accepted"] == 1
    assert again["results"][0] == {"id": first["id"], "index": original, "status": "duplicate"}
    assert again["results"][2]["index"] == original


def test_duplicates_within_one_request_share_an_index(server: Server, source_token: str) -> None:
    twin = event()
    body = post(server, source_token, [twin, twin]).json()
    assert body["accepted"] == 1 and body["duplicates"] == 1
    assert body["results"][0]["index"] == body["results"][1]["index"]


def test_an_event_without_id_gets_one(server: Server, source_token: str, admin: str) -> None:
    r = post(server, source_token, {"action": "auth.login", "actor": {"id": "bob"}}).json()
    assigned = r["results"][0]["id"]
    assert uuid.UUID(assigned).version == 7
    assert stored(server, admin, r["results"][0]["index"])["id"] == assigned


def test_mixed_batch_keeps_good_items(server: Server, source_token: str) -> None:
    good = event()
    body = post(server, source_token, [good, {"action": "x", "actor": {}}, 17]).json()
    assert body["accepted"] == 1 and body["rejected"] == 2
    assert body["results"][1]["status"] == "rejected" and "actor.id" in body["results"][1]["error"]
    assert body["results"][2]["error"] == "an event must be a JSON object"


def test_ndjson_bad_line_is_one_rejected_item(server: Server, source_token: str) -> None:
    body = orjson.dumps(event()) + b"\n{not json\n" + orjson.dumps(event())
    r = post(server, source_token, body, **{"Content-Type": "application/x-ndjson"}).json()
    assert r["accepted"] == 2 and r["rejected"] == 1 and r["results"][1]["status"] == "rejected"


def count(server: Server, admin: str) -> int:
    with server.client(admin) as http:
        return http.get("/healthz").json()["size"]


@pytest.mark.parametrize(
    ("body", "headers", "status", "text"),
    [
        (b'{"action": ', {}, 400, "not valid JSON"),
        (b'{"action": "\xff\xfe"}', {}, 400, "not valid JSON"),
        (b'"a string"', {}, 400, "must be a JSON object"),
        (b"[]", {}, 400, "no events"),
        (b"<xml/>", {"Content-Type": "application/xml"}, 400, "unsupported Content-Type"),
        (b"not gzip", {"Content-Encoding": "gzip"}, 400, "gzip"),
        (b"x", {"Content-Encoding": "br"}, 400, "Content-Encoding"),
        (orjson.dumps({"action": 1, "actor": {"id": "a"}}), {}, 422, "action"),
        (orjson.dumps({"action": "a", "actor": {"id": "a"}, "extra": 1}), {}, 422, "extra"),
        (orjson.dumps({"actor": {"id": "a"}}), {}, 422, "action: Field required"),
    ],
)
def test_bad_bodies_get_problems_and_store_nothing(
    server: Server, source_token: str, admin: str, body: bytes, headers: dict, status: int, text: str
) -> None:
    before = count(server, admin)
    assert_problem(post(server, source_token, body, **headers), status, text)
    assert count(server, admin) == before


def test_validation_problem_names_the_item_and_field(server: Server, source_token: str) -> None:
    r = post(server, source_token, [{"action": "a", "actor": {"id": 5}}])
    problem = assert_problem(r, 422, "item 0: actor.id")
    assert problem["errors"] == [{"path": "actor.id", "reason": "Input should be a valid string", "item": 0}]


def test_deep_nesting_is_refused(server: Server, source_token: str) -> None:
    deep: object = "x"
    for _ in range(200):
        deep = {"a": deep}
    r = post(server, source_token, event(attributes=deep))
    assert r.status_code in (400, 422), r.text
    assert r.headers["content-type"] == "application/problem+json"


def test_oversized_body_is_413(server: Server, source_token: str) -> None:
    huge = b"[" + b",".join([orjson.dumps(event(reason="x" * 8000))] * 2200) + b"]"
    assert len(huge) > 16 * 1024 * 1024
    assert_problem(post(server, source_token, huge), 413, "larger than")


def test_gzip_bomb_is_413(server: Server, source_token: str) -> None:
    bomb = gzip.compress(b"[" + b" " * (40 * 1024 * 1024) + b"]")
    assert len(bomb) < 1024 * 1024
    assert_problem(post(server, source_token, bomb, **{"Content-Encoding": "gzip"}), 413, "inflated")


def test_more_than_10000_events_is_413(server: Server, source_token: str) -> None:
    many = b"\n".join([b'{"action":"a","actor":{"id":"b"}}'] * 10_001)
    r = post(server, source_token, many, **{"Content-Type": "application/x-ndjson"})
    assert_problem(r, 413, "limit is 10000")


@pytest.mark.parametrize(
    ("authorization", "text"),
    [
        (None, "no bearer token"),
        ("Basic dXNlcjpwYXNz", "must be: Bearer"),
        ("Bearer nonsense", "malformed"),
        ("Bearer afd_" + "A" * 43, "not known"),
    ],
)
def test_bad_credentials_are_401(server: Server, authorization: str | None, text: str) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    with server.client() as http:
        r = http.post("/v1/events", content=orjson.dumps(event()), headers=headers)
    assert_problem(r, 401, text)


def test_an_auditor_cannot_write(server: Server) -> None:
    auditor = server.token("auditor")
    assert_problem(post(server, auditor, event()), 403, "source or admin")


def test_a_source_cannot_write_as_another_service(server: Server, source_token: str, admin: str) -> None:
    before = count(server, admin)
    r = post(server, source_token, [event(), event(source={"service": "payroll"})])
    assert_problem(r, 403, "'payroll' is not this token's service")
    r = post(server, source_token, event(source={"service": "billing-api", "environment": "dev"}))
    assert_problem(r, 403, "environment")
    assert count(server, admin) == before


def test_server_keeps_serving_after_bad_input(server: Server, source_token: str) -> None:
    for _ in range(20):
        post(server, source_token, b"\x00\x01garbage")
    assert post(server, source_token, event()).status_code == 200


def test_hostile_strings_are_stored_verbatim(server: Server, source_token: str, admin: str) -> None:
    hostile = "'; DROP TABLE events; --\u0000\u202e<script>\U0001f600"
    r = post(server, source_token, event(reason=hostile, resource={"id": hostile})).json()
    assert stored(server, admin, r["results"][0]["index"])["reason"] == hostile
