"""Issue #16 on a real server: the per-event size cap and the 500s that must be 4xx.

- an event over ``max_event_bytes`` (default 1 MiB of canonical JSON) is refused with
  413 naming the item; in a batch only that item is rejected, on every ingest route;
- ``time>=now-999999d`` (OverflowError) on search, evidence and ``since=``, and
  timestamps beyond year 9999 in UTC, are 400s / rejected items;
- integers above 2**63 (and negative ones) in every index, size and cursor parameter
  and header are 400s, and the OpenAPI document states the bound;
- ``auditfed send`` with a file that breaks I-JSON gives a clear CLI error.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import orjson
import pytest
from body_helpers import assert_problem, stored
from support.server import Server, run_cli

MiB = 1024 * 1024
HUGE = str(2**64)
MAX_INDEX = 2**63 - 1


def marker() -> str:
    return f"limit-{uuid.uuid4().hex[:12]}"


def event(actor: str, **fields: object) -> dict:
    return {"id": str(uuid.uuid4()), "action": "db.query", "actor": {"id": actor}, **fields}


# --- the per-event size cap ------------------------------------------------------------------


def test_one_event_over_the_cap_is_413(server: Server, source_token: str, admin: str) -> None:
    actor = marker()
    big = event(actor, attributes={"blob": "x" * (MiB + 1)})
    with server.client(source_token) as http:
        answer = http.post("/v1/events", json=big)
    problem = assert_problem(answer, 413, "item 0", "max_event_bytes")
    assert problem["results"][0]["id"] == big["id"]
    assert stored(server, admin, actor) == 0


def test_in_a_batch_only_the_big_event_is_rejected(server: Server, source_token: str, admin: str) -> None:
    actor = marker()
    batch = [event(actor), event(actor, attributes={"blob": "x" * (MiB + 1)}), event(actor)]
    with server.client(source_token) as http:
        answer = http.post("/v1/events", content=b"\n".join(orjson.dumps(e) for e in batch),
                           headers={"Content-Type": "application/x-ndjson"})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert [r["status"] for r in body["results"]] == ["accepted", "rejected", "accepted"]
    assert body["results"][1]["id"] == batch[1]["id"] and "max_event_bytes" in body["results"][1]["error"]
    assert stored(server, admin, actor) == 2


def test_an_event_just_under_the_cap_is_stored(server: Server, source_token: str, admin: str) -> None:
    actor = marker()
    with server.client(source_token) as http:
        answer = http.post("/v1/events", json=event(actor, attributes={"blob": "x" * (MiB - 4096)}))
    assert answer.status_code == 200, answer.text
    assert stored(server, admin, actor) == 1


def test_the_cap_holds_for_source_records(server: Server, source_token: str, admin: str) -> None:
    user = marker()

    def record(size: int) -> dict:
        return {"kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Request", "auditID": str(uuid.uuid4()),
                "stage": "ResponseComplete", "verb": "create", "user": {"username": user},
                "objectRef": {"resource": "configmaps", "namespace": "ops", "name": "c"},
                "requestObject": {"data": {"blob": "x" * size}}}

    with server.client(source_token) as http:
        answer = http.post("/v1/ingest/k8s-audit", json=[record(10), record(MiB + 1)])
        assert answer.status_code == 200, answer.text
        results = answer.json()["results"]
        assert [(r["record"], r["status"]) for r in results] == [(0, "accepted"), (1, "rejected")]
        assert "max_event_bytes" in results[1]["error"]
        alone = http.post("/v1/ingest/k8s-audit", json=record(MiB + 1))
        assert_problem(alone, 413, "max_event_bytes")
    assert stored(server, admin, user) == 1


def test_the_cap_holds_for_otlp(server: Server, source_token: str, admin: str) -> None:
    actor = marker()
    request = {"resourceLogs": [{"scopeLogs": [{"logRecords": [{
        "timeUnixNano": "1764262800000000000", "body": {"stringValue": "x" * (MiB + 1)},
        "attributes": [{"key": "audit.action", "value": {"stringValue": "db.query"}},
                       {"key": "audit.actor.id", "value": {"stringValue": actor}}]}]}]}]}
    with server.client(source_token) as http:
        answer = http.post("/v1/logs", json=request)
    assert answer.status_code == 200, answer.text
    partial = answer.json()["partialSuccess"]
    assert int(partial["rejectedLogRecords"]) == 1 and "max_event_bytes" in partial["errorMessage"]
    assert stored(server, admin, actor) == 0


# --- time offsets that overflowed -------------------------------------------------------------


def test_relative_times_before_year_one_are_400(server: Server, admin: str) -> None:
    with server.client(admin) as http:
        assert_problem(http.get("/v1/events", params={"q": "time>=now-999999d"}), 400, "before the year 1")
        assert_problem(http.post("/v1/evidence", json={"query": "time>=now-999999d"}), 400, "before the year 1")
        assert_problem(http.get("/v1/unjustified-changes", params={"since": "now-999999d"}), 400, "since")
        assert http.get("/v1/events", params={"q": "time>=now-99999d"}).status_code == 200


def test_timestamps_beyond_year_9999_in_utc_are_rejected(server: Server, source_token: str, admin: str) -> None:
    actor = marker()
    with server.client(source_token) as http:
        answer = http.post("/v1/events", json=event(actor, time="9999-12-31T23:59:59-23:59"))
        assert_problem(answer, 422, "outside years 1-9999")
        cloudevent = {"specversion": "1.0", "id": str(uuid.uuid4()), "source": "/x", "type": "a.b",
                      "time": 10**20, "subject": actor}
        answer = http.post("/v1/ingest/cloudevents", json=[cloudevent],
                           headers={"Content-Type": "application/cloudevents-batch+json"})
        assert answer.status_code in (400, 422), answer.text
    with server.client(admin) as http:
        query = http.get("/v1/events", params={"q": "time>=9999-12-31T23:59:59-23:59"})
        assert_problem(query, 400, "is not a time")
    assert stored(server, admin, actor) == 0


# --- integer parameters ---------------------------------------------------------------------------

INTEGER_PARAMETERS = [
    "/v1/events/{n}",
    "/v1/events?cursor={n}",
    "/v1/alerts?before={n}",
    "/v1/log/checkpoint?size={n}",
    "/v1/log/entries?start={n}&end={n}",
    "/v1/log/entries?start=0&end={n}",
    "/v1/log/proof/inclusion?index={n}",
    "/v1/log/proof/inclusion?index=0&size={n}",
    "/v1/log/proof/consistency?old={n}&new={n}",
    "/v1/log/proof/consistency?old=0&new={n}",
    "/v1/principals/alice/timeline?limit={n}",
    "/v1/who-accessed?resource=x&limit={n}",
]


@pytest.mark.parametrize("template", INTEGER_PARAMETERS)
@pytest.mark.parametrize("number", [HUGE, str(2**63), "-1", "9" * 400], ids=["2**64", "2**63", "-1", "400-digits"])
def test_integer_parameters_out_of_range_are_400(server: Server, admin: str, template: str, number: str) -> None:
    with server.client(admin) as http:
        answer = http.get(template.format(n=number))
    assert answer.status_code == 400, answer.text
    assert answer.headers["content-type"] == "application/problem+json"


def test_the_largest_tree_size_is_no_event_index(server: Server, admin: str) -> None:
    """The fuzz found ``/v1/events/{2**63 - 1}`` a 500: reading up to ``index + 1`` overflowed."""
    with server.client(admin) as http:
        assert_problem(http.get(f"/v1/events/{MAX_INDEX}"), 400)
        assert http.get(f"/v1/events/{MAX_INDEX - 1}").status_code == 404


def test_integer_headers_and_body_fields_out_of_range_are_400(server: Server, admin: str) -> None:
    with server.client(admin) as http:
        stream = http.get("/v1/alerts/stream", headers={"Last-Event-ID": HUGE})
        assert_problem(stream, 400, "Last-Event-ID must be a log index")
        evidence = http.post("/v1/evidence", json={"limit": 2**63})
        assert_problem(evidence, 400, "limit")
        consistency = http.post("/v1/evidence", json={"consistency_from": [2**53 - 1]})
        assert_problem(consistency, 400, "consistency_from")


def test_openapi_states_the_bounds(server: Server) -> None:
    with server.client() as http:
        paths = http.get("/openapi.json").json()["paths"]

    def schema(path: str, name: str) -> dict:
        for parameter in paths[path]["get"]["parameters"]:
            if parameter["name"] == name:
                found = parameter["schema"]
                return next((s for s in found.get("anyOf", []) if s.get("type") == "integer"), found)
        raise AssertionError(f"{path} has no parameter {name}")

    for path, name in [("/v1/events/{index}", "index"), ("/v1/events", "cursor"), ("/v1/alerts", "before"),
                       ("/v1/log/checkpoint", "size"), ("/v1/log/entries", "start"), ("/v1/log/entries", "end"),
                       ("/v1/log/proof/inclusion", "index"), ("/v1/log/proof/inclusion", "size"),
                       ("/v1/log/proof/consistency", "old"), ("/v1/log/proof/consistency", "new")]:
        bound = schema(path, name)
        # a leaf index stays below the largest tree size
        assert bound["maximum"] == MAX_INDEX - (path == "/v1/events/{index}"), (path, name, bound)
        assert bound.get("minimum", bound.get("exclusiveMinimum")) in (0, 1), (path, name, bound)


# --- the CLI ----------------------------------------------------------------------------------------


def test_send_refuses_a_file_that_breaks_ijson(server: Server, source_token: str, admin: str,
                                               tmp_path: Path) -> None:
    actor = marker()
    bad = tmp_path / "bad.json"
    bad.write_bytes(b'[{"action":"a.b","actor":{"id":"' + actor.encode() + b'"}},'
                    b'{"action":"a.b","actor":{"id":"' + actor.encode() + b'"},"attributes":{"n":1,"n":2}}]')
    env = {"AUDITFED_URL": server.url, "AUDITFED_TOKEN": source_token}
    result = run_cli("send", str(bad), env=env)
    assert result.returncode == 1
    assert "bad.json item 2:" in result.stderr  # 1-based (issue #18): the second item
    assert "duplicate member name 'n'" in result.stderr and "Traceback" not in result.stderr
    assert stored(server, admin, actor) == 0
    # NDJSON: the bad line is rejected, the good ones are stored.
    lines = tmp_path / "mixed.ndjson"
    lines.write_bytes(b'{"action":"a.b","actor":{"id":"' + actor.encode() + b'"}}\n'
                      b'{"action":"a.b","actor":{"id":"' + actor.encode() + b'"},"action":"c.d"}\n')
    sent = json.loads(run_cli("send", str(lines), "--json", env=env).stdout)
    assert sent["accepted"] == 1 and sent["rejected"] == 1, sent
    assert "mixed.ndjson line 2:" in sent["errors"][0] and "duplicate member name 'action'" in sent["errors"][0]
    assert stored(server, admin, actor) == 1
