"""Issue #16, "every byte sent is either stored exactly or refused", on a real server.

gzip bodies of several members are decoded whole, trailing bytes are refused;
duplicate member names and deep nesting are refused (400 naming the item and the
name) on every route that takes a body, or per line / per record where the route
judges items one by one; numbers beyond ±(2**53 - 1) are refused per event (422).
Each case also checks that nothing of a refused request reached the log.
"""

from __future__ import annotations

import gzip
import uuid

import orjson
import pytest
from body_helpers import assert_problem, stored
from support.server import Server

from auditfed.ledger.note import Signer

DEEP = 1000  # attributes nested this deep raised RecursionError (a 500)


def marker() -> str:
    return f"body-{uuid.uuid4().hex[:12]}"


def event_text(actor: str, attributes: str = "{}") -> bytes:
    """An event as JSON text, with ``attributes`` spliced in verbatim."""
    return (b'{"id":"' + uuid.uuid4().hex.encode() + b'","action":"db.query","actor":{"id":"'
            + actor.encode() + b'"},"attributes":' + attributes.encode() + b"}")


def nested(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


def post(server: Server, token: str, path: str, body: bytes, content_type: str = "application/json",
         **headers: str):
    with server.client(token) as http:
        return http.post(path, content=body, headers={"Content-Type": content_type, **headers})


# --- gzip ------------------------------------------------------------------------------


def test_every_gzip_member_is_decoded(server: Server, source_token: str, admin: str) -> None:
    """``cat a.gz b.gz``: the second member's events were silently dropped."""
    actor = marker()
    first = gzip.compress(event_text(actor) + b"\n" + event_text(actor) + b"\n")
    second = gzip.compress(event_text(actor) + b"\n")
    answer = post(server, source_token, "/v1/events", first + second, "application/x-ndjson",
                  **{"Content-Encoding": "gzip"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["accepted"] == 3
    assert stored(server, admin, actor) == 3


def test_member_boundary_inside_a_json_text(server: Server, source_token: str, admin: str) -> None:
    """Members are one byte stream: a JSON array may be split across them anywhere."""
    actor = marker()
    text = b"[" + event_text(actor) + b"," + event_text(actor) + b"]"
    middle = len(text) // 2
    body = gzip.compress(text[:middle]) + gzip.compress(text[middle:])
    answer = post(server, source_token, "/v1/events", body, **{"Content-Encoding": "gzip"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["accepted"] == 2 and stored(server, admin, actor) == 2


def test_a_regular_gzip_body_still_works(server: Server, source_token: str, admin: str) -> None:
    actor = marker()
    body = gzip.compress(b"[" + b",".join(event_text(actor) for _ in range(5)) + b"]")
    answer = post(server, source_token, "/v1/events", body, **{"Content-Encoding": "gzip"})
    assert answer.status_code == 200 and answer.json()["accepted"] == 5
    assert stored(server, admin, actor) == 5


@pytest.mark.parametrize("trailer", [b"garbage", b"\x00" * 8, b"\x1f"])
def test_trailing_bytes_after_gzip_are_refused(server: Server, source_token: str, admin: str,
                                               trailer: bytes) -> None:
    actor = marker()
    body = gzip.compress(event_text(actor)) + trailer
    answer = post(server, source_token, "/v1/events", body, **{"Content-Encoding": "gzip"})
    assert_problem(answer, 400, f"{len(trailer)} bytes after gzip member 1")
    assert stored(server, admin, actor) == 0


def test_a_truncated_second_member_is_refused(server: Server, source_token: str, admin: str) -> None:
    actor = marker()
    body = gzip.compress(event_text(actor)) + gzip.compress(event_text(actor))[:-6]
    answer = post(server, source_token, "/v1/events", body, "application/x-ndjson",
                  **{"Content-Encoding": "gzip"})
    assert_problem(answer, 400, "truncated")
    assert stored(server, admin, actor) == 0


def test_the_inflated_limit_applies_to_all_members(server: Server, source_token: str) -> None:
    # Each member alone is under the server's 16 MiB; together they are over it.
    member = gzip.compress(b" " * (9 * 1024 * 1024))
    answer = post(server, source_token, "/v1/events", member + member, **{"Content-Encoding": "gzip"})
    assert_problem(answer, 413, "inflated body is larger than")


def test_source_routes_decode_every_member(server: Server, source_token: str, admin: str) -> None:
    """A CloudTrail ``.json.gz`` object of two members (no Content-Encoding)."""
    user = marker()
    record = {"eventVersion": "1.08", "eventTime": "2026-11-27T17:00:00Z", "eventSource": "iam.amazonaws.com",
              "eventName": "CreateUser", "awsRegion": "eu-west-1", "userIdentity": {
                  "type": "IAMUser", "userName": user, "arn": f"arn:aws:iam::123456789012:user/{user}"}}
    first = gzip.compress(b'{"Records":[' + orjson.dumps({**record, "eventID": str(uuid.uuid4())}) + b",")
    second = gzip.compress(orjson.dumps({**record, "eventID": str(uuid.uuid4())}) + b"]}")
    answer = post(server, source_token, "/v1/ingest/cloudtrail", first + second, "application/gzip")
    assert answer.status_code == 200, answer.text
    assert answer.json()["accepted"] == 2
    assert answer.json()["rejected"] == 0


# --- duplicate member names ------------------------------------------------------------


def test_duplicate_names_are_refused_naming_the_name(server: Server, source_token: str, admin: str) -> None:
    actor = marker()
    body = (b'{"action":"db.query","action":"auth.login","actor":{"id":"' + actor.encode() + b'"}}')
    assert_problem(post(server, source_token, "/v1/events", body), 400, "duplicate member name 'action'")
    assert stored(server, admin, actor) == 0


def test_duplicate_in_an_array_names_the_item(server: Server, source_token: str, admin: str) -> None:
    actor = marker()
    body = b"[" + event_text(actor) + b"," + event_text(actor, '{"n":1,"n":2}') + b"]"
    problem = assert_problem(post(server, source_token, "/v1/events", body), 400,
                             "item 1", "duplicate member name 'n'")
    assert problem["item"] == 1
    assert stored(server, admin, actor) == 0  # the whole body is refused, as for bad syntax


def test_duplicates_hidden_behind_escapes_are_found(server: Server, source_token: str, admin: str) -> None:
    """``"\\u006e"`` is ``"n"``; backslashes elsewhere must not hide the duplicate."""
    actor = marker()
    attributes = r'{"path":"C:\\Users\\\"x\"","\u006e":1,"n":2}'
    assert_problem(post(server, source_token, "/v1/events", event_text(actor, attributes)), 400,
                   "duplicate member name 'n'")
    assert stored(server, admin, actor) == 0


def test_ndjson_rejects_only_the_bad_line(server: Server, source_token: str, admin: str) -> None:
    actor = marker()
    lines = [event_text(actor), event_text(actor, '{"k":1,"k":2}'), event_text(actor, '{"n":18446744073709551616}'),
             event_text(actor, nested(DEEP)), event_text(actor)]
    answer = post(server, source_token, "/v1/events", b"\n".join(lines), "application/x-ndjson")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["accepted"], body["rejected"]) == (2, 3)
    statuses = [r["status"] for r in body["results"]]
    assert statuses == ["accepted", "rejected", "rejected", "rejected", "accepted"]
    assert "duplicate member name 'k'" in body["results"][1]["error"]
    assert "outside the I-JSON range" in body["results"][2]["error"]
    assert "nested deeper than 64" in body["results"][3]["error"]
    assert stored(server, admin, actor) == 2


# --- I-JSON numbers ----------------------------------------------------------------------


@pytest.mark.parametrize("number", ["18446744073709551616", "9223372036854775808", "9007199254740992",
                                    "-9007199254740992", "1" + "0" * 40, "1e20", "-1.5e300"])
def test_numbers_beyond_ijson_are_refused(server: Server, source_token: str, admin: str, number: str) -> None:
    """2**64 was stored as 1.8446744073709552e+19 while 2**63 was refused: now every
    number beyond ±(2**53 - 1), however written, is refused (per event, 422)."""
    actor = marker()
    answer = post(server, source_token, "/v1/events", event_text(actor, '{"n":' + number + "}"))
    assert_problem(answer, 422, "item 0", "attributes: number", "outside the I-JSON range", "send it as a string")
    assert stored(server, admin, actor) == 0


def test_numbers_within_ijson_are_stored_exactly(server: Server, source_token: str, admin: str) -> None:
    actor = marker()
    attributes = '{"max":9007199254740991,"min":-9007199254740991,"card":"1234567890123456789","f":0.5}'
    answer = post(server, source_token, "/v1/events", event_text(actor, attributes))
    assert answer.status_code == 200, answer.text
    index = answer.json()["results"][0]["index"]
    with server.client(admin) as http:
        got = http.get(f"/v1/events/{index}").json()["event"]["attributes"]
    assert got == {"max": 2**53 - 1, "min": -(2**53 - 1), "card": "1234567890123456789", "f": 0.5}


# --- nesting -------------------------------------------------------------------------------


def test_attributes_nested_1000_deep_are_a_400(server: Server, source_token: str, admin: str) -> None:
    actor = marker()
    answer = post(server, source_token, "/v1/events", event_text(actor, nested(DEEP)))
    assert_problem(answer, 400, "nested deeper than 64 levels")
    assert stored(server, admin, actor) == 0


def test_source_records_nested_deep_are_refused(server: Server, source_token: str, admin: str) -> None:
    user = marker()
    record = (b'{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Request","auditID":"'
              + str(uuid.uuid4()).encode() + b'","stage":"ResponseComplete","verb":"get","user":{"username":"'
              + user.encode() + b'"},"requestObject":' + nested(DEEP).encode() + b"}")
    answer = post(server, source_token, "/v1/ingest/k8s-audit", record)
    assert_problem(answer, 400, "nested deeper than 64 levels")
    # In a JSON array the record is rejected on its own, like a record with bad syntax.
    good = record.replace(nested(DEEP).encode(), b"{}").replace(b'"auditID":"', b'"auditID":"x')
    answer = post(server, source_token, "/v1/ingest/k8s-audit", b"[" + good + b"," + record + b"]")
    assert answer.status_code == 200, answer.text
    results = answer.json()["results"]
    assert [r["status"] for r in results] == ["accepted", "rejected"]
    assert "nested deeper than 64" in results[1]["error"]
    assert stored(server, admin, user) == 1


def test_otlp_json_is_read_under_ijson(server: Server, source_token: str, admin: str) -> None:
    actor = marker()

    def request(extra: str) -> bytes:
        return ('{"resourceLogs":[{"resource":{"attributes":[]},"scopeLogs":[{"logRecords":[{'
                '"timeUnixNano":"1764262800000000000","attributes":['
                '{"key":"audit.action","value":{"stringValue":"db.query"}},'
                '{"key":"audit.actor.id","value":{"stringValue":"' + actor + '"}}]' + extra + "}]}]}]}").encode()

    dup = post(server, source_token, "/v1/logs", request(',"severityText":"INFO","severityText":"WARN"'))
    assert_problem(dup, 400, "duplicate member name 'severityText'")
    big = post(server, source_token, "/v1/logs", request(
        ',"body":{"kvlistValue":{"values":[{"key":"n","value":{"doubleValue":1e20}}]}}'))
    assert big.status_code == 200, big.text  # OTLP: a refused record is a partial success
    assert "outside the I-JSON range" in big.json()["partialSuccess"]["errorMessage"]
    assert stored(server, admin, actor) == 0
    assert post(server, source_token, "/v1/logs", request("")).status_code == 200
    assert stored(server, admin, actor) == 1


def test_otlp_protobuf_nested_deep_is_a_400(server: Server, source_token: str, admin: str) -> None:
    actor = marker()

    def field(number: int, payload: bytes) -> bytes:
        return _varint(number << 3 | 2) + _varint(len(payload)) + payload

    def attribute(key: str, value: bytes) -> bytes:
        return field(1, key.encode()) + field(2, value)

    value = field(1, b"x")  # AnyValue.string_value
    for _ in range(DEEP):   # AnyValue.kvlist_value -> KeyValueList.values -> KeyValue
        value = field(6, field(1, attribute("a", value)))
    record = b"".join(field(6, a) for a in (attribute("audit.action", field(1, b"db.query")),
                                            attribute("audit.actor.id", field(1, actor.encode())),
                                            attribute("deep", value)))
    body = field(1, field(2, field(2, record)))
    answer = post(server, source_token, "/v1/logs", body, "application/x-protobuf")
    assert answer.status_code == 400, answer.text
    assert stored(server, admin, actor) == 0


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | 0x80 if value else byte)
        if not value:
            return bytes(out)


# --- routes with a JSON model body, and federation -------------------------------------------


def test_admin_bodies_refuse_duplicates_and_huge_integers(server: Server, admin: str) -> None:
    with server.client(admin) as http:
        before = len(http.get("/v1/tokens").json()["tokens"])
        dup = http.post("/v1/tokens", content=b'{"role":"auditor","role":"admin"}',
                        headers={"Content-Type": "application/json"})
        assert_problem(dup, 400, "duplicate member name 'role'")
        for seconds in (10**20, 2**53 - 1):  # overflowed the expiry date: a 500
            huge = http.post("/v1/tokens", json={"role": "auditor", "expires_in_seconds": seconds})
            assert_problem(huge, 400, "expires_in_seconds")
        assert len(http.get("/v1/tokens").json()["tokens"]) == before
        # The same decoding path takes gzip, so a regular gzip body works there too.
        zipped = http.post("/v1/tokens", content=gzip.compress(b'{"role":"auditor"}'),
                           headers={"Content-Type": "application/json", "Content-Encoding": "gzip"})
        assert zipped.status_code == 201, zipped.text
        assert len(http.get("/v1/tokens").json()["tokens"]) == before + 1


def test_bodies_of_admin_routes_are_read_only_for_a_valid_token(server: Server) -> None:
    # Refused as unauthenticated (401), not as a bad body (400): the body was not read.
    for token in (None, "afd_" + "x" * 43):
        with server.client(token) as http:
            answer = http.post("/v1/tokens", content=gzip.compress(b'{"role":"admin","role":"admin"}'),
                               headers={"Content-Type": "application/json", "Content-Encoding": "gzip"})
        assert_problem(answer, 401)


def test_federation_batches_go_through_the_same_decoding(server: Server, admin: str) -> None:
    name = marker()
    signer = Signer.generate(f"{name}.example/log")
    with server.client(admin) as http:
        enrolled = http.post("/v1/federation/nodes", json={"name": name, "key": signer.verifier_key()})
    assert enrolled.status_code == 201, enrolled.text
    path = f"/v1/federation/nodes/{name}/entries"
    token = enrolled.json()["token"]
    dup = post(server, token, path, b'{"start":0,"start":1,"leaves":[],"checkpoint":""}')
    assert_problem(dup, 400, "duplicate member name 'start'")
    # gzip in two members is inflated whole: the batch is then judged (here: a bad start).
    text = b'{"start":-1,"leaves":[],"checkpoint":""}'
    zipped = gzip.compress(text[:10]) + gzip.compress(text[10:])
    assert_problem(post(server, token, path, zipped, **{"Content-Encoding": "gzip"}), 400,
                   "start must be a non-negative integer")
    assert_problem(post(server, token, path, gzip.compress(text) + b"x", **{"Content-Encoding": "gzip"}), 400,
                   "after gzip member")
