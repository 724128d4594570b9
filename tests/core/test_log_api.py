"""The log through its API: checkpoints, entries and proofs verified as a client would."""

from __future__ import annotations

import base64
import uuid

import pytest
from support.server import Server

from auditfed.ledger import Verifier, leaf_hash, verify_checkpoint, verify_consistency, verify_inclusion


@pytest.fixture(scope="module")
def filled(server: Server, source_token: str) -> Server:
    with server.client(source_token) as http:
        for batch in range(3):
            events = [{"id": f"{batch}-{i}-{uuid.uuid4()}", "action": "config.update",
                       "actor": {"id": "bob", "principal": "bob@corp.example"},
                       "resource": {"type": "config", "id": f"svc/{i % 7}"},
                       "trace": {"trace_id": f"{i:032x}", "span_id": f"{i + 1:016x}"}}
                      for i in range(1, 301)]
            assert http.post("/v1/events", json=events).json()["accepted"] == 300
            http.get("/v1/log/checkpoint")  # a checkpoint per batch, on demand
    return server


def first_event(server: Server, admin: str) -> int:
    """The index of the first event ``filled`` sent (the log's own records come before:
    the tokens' creation)."""
    with server.client(admin) as http:
        found = http.get("/v1/events", params={"q": "action:config.update", "order": "oldest", "limit": 1})
    return found.json()["events"][0]["index"]


def key(server: Server) -> Verifier:
    with server.client() as http:
        return Verifier.from_key(http.get("/v1/log/key").text.strip())


def test_checkpoint_is_public_and_signed(filled: Server) -> None:
    with filled.client() as http:
        r = http.get("/v1/log/checkpoint")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    checkpoint = verify_checkpoint(r.text, key(filled))
    assert checkpoint.size >= 900


def test_every_entry_is_provably_included(filled: Server, admin: str) -> None:
    with filled.client() as http:
        cp = verify_checkpoint(http.get("/v1/log/checkpoint").text, key(filled))
    with filled.client(admin) as http:
        entries = []
        while len(entries) < cp.size:
            page = http.get("/v1/log/entries", params={"start": len(entries), "end": cp.size}).json()
            entries += [base64.b64decode(e["data"]) for e in page["entries"]]
        for index in range(0, cp.size, 37):
            proof = http.get("/v1/log/proof/inclusion", params={"index": index, "size": cp.size}).json()
            hashes = [base64.b64decode(h) for h in proof["hashes"]]
            verify_inclusion(leaf_hash(entries[index]), index, cp.size, hashes, cp.root)


def test_every_pair_of_checkpoints_is_consistent(filled: Server, admin: str) -> None:
    verifier = key(filled)
    with filled.client(admin) as http:
        latest = verify_checkpoint(http.get("/v1/log/checkpoint").text, verifier)
        first = first_event(filled, admin)
        sizes = [s for s in (first + 300, first + 600, first + 900) if s <= latest.size]
        notes = {s: http.get("/v1/log/checkpoint", params={"size": s}) for s in sizes}
        signed = {s: verify_checkpoint(r.text, verifier) for s, r in notes.items() if r.status_code == 200}
        assert len(signed) >= 2
        for old in signed:
            for new in signed:
                if old <= new:
                    proof = http.get("/v1/log/proof/consistency", params={"old": old, "new": new}).json()
                    hashes = [base64.b64decode(h) for h in proof["hashes"]]
                    verify_consistency(old, new, signed[old].root, signed[new].root, hashes)


def test_missing_checkpoint_size_is_404(filled: Server) -> None:
    with filled.client() as http:
        r = http.get("/v1/log/checkpoint", params={"size": 1_000_000})
    assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize(
    ("path", "params", "text"),
    [
        ("/v1/log/proof/inclusion", {"index": 10**9}, "not in a tree"),
        ("/v1/log/proof/inclusion", {"index": -1}, "index"),
        ("/v1/log/proof/inclusion", {"index": "x"}, "index"),
        ("/v1/log/proof/consistency", {"old": 5, "new": 10**9}, "beyond"),
        ("/v1/log/proof/consistency", {"old": 50, "new": 10}, "larger than"),
        ("/v1/log/entries", {"start": 10, "end": 5}, "below end"),
        ("/v1/log/entries", {"start": 0, "end": 10**9}, "beyond"),
    ],
)
def test_bad_proof_requests_are_400(filled: Server, admin: str, path: str, params: dict, text: str) -> None:
    with filled.client(admin) as http:
        r = http.get(path, params=params)
    assert r.status_code == 400 and text in r.json()["detail"], r.text


def test_entries_and_proofs_need_an_auditor(filled: Server, source_token: str) -> None:
    with filled.client(source_token) as http:
        assert http.get("/v1/log/entries", params={"start": 0, "end": 1}).status_code == 403
    with filled.client() as http:
        assert http.get("/v1/log/proof/inclusion", params={"index": 0}).status_code == 401
    with filled.client(filled.token("auditor")) as http:
        assert http.get("/v1/log/proof/inclusion", params={"index": 0}).status_code == 200


def test_search_filters_and_pages(filled: Server, admin: str) -> None:
    with filled.client(admin) as http:
        first = http.get("/v1/events", params={"q": "resource:svc/3 action:config.*", "limit": 10}).json()
        assert len(first["events"]) == 10
        assert all(e["event"]["resource"]["id"] == "svc/3" for e in first["events"])
        rest = http.get("/v1/events", params={"q": "resource:svc/3", "limit": 1000,
                                              "cursor": first["next_cursor"]}).json()
        indexes = [e["index"] for e in first["events"] + rest["events"]]
        assert indexes == sorted(indexes, reverse=True) and len(set(indexes)) == len(indexes)
        assert len(indexes) == 3 * len([i for i in range(1, 301) if i % 7 == 3])
        oldest = http.get("/v1/events", params={"q": "actor:bob", "order": "oldest",
                                                "limit": 5}).json()
        assert [e["index"] for e in oldest["events"]] == sorted(e["index"] for e in oldest["events"])
        bad = http.get("/v1/events", params={"q": "(action:x"})
        assert bad.status_code == 400 and "parenthesis" in bad.json()["detail"]


def test_event_by_index(filled: Server, admin: str) -> None:
    with filled.client(admin) as http:
        assert http.get(f"/v1/events/{first_event(filled, admin)}").json()["event"]["action"] == "config.update"
        assert http.get("/v1/events/0").json()["event"]["source"]["service"] == "auditfed"  # a token's creation
        assert http.get("/v1/events/99999999").status_code == 404


def test_health_metrics_schema_openapi(filled: Server) -> None:
    with filled.client() as http:
        health = http.get("/healthz").json()
        assert health["status"] == "ok" and health["size"] >= 900
        metrics = http.get("/metrics").text
        assert "auditfed_events_ingested_total" in metrics and "auditfed_commit_seconds_bucket" in metrics
        assert "auditfed_log_size" in metrics
        assert http.get("/v1/schema/event").json()["required"] == ["action", "actor"]
        assert "/v1/events" in http.get("/openapi.json").json()["paths"]
