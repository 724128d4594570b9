"""Property-based fuzz of every route the server documents (issue #16 item 9: no 500 from outside).

Schemathesis reads the running server's own ``GET /openapi.json`` and, for every
operation, sends cases that fit the schema and cases that break it (wrong types, huge
numbers, odd strings), each as every caller: no token, source, auditor, admin and an
enrolled federation node. Every answer must be below 500, carry a status the document
lists, in a media type it lists (``application/problem+json`` for errors), with a body
its schema allows; and the server must still be up and healthy afterwards.

Budget: ``AUDITFED_FUZZ_EXAMPLES`` cases per operation and role (default 15, sized
for CI on two cores: the whole module takes ~1-2 minutes); the seed is fixed
(``derandomize``) so CI does not flake. For a deep local run raise it, e.g.
``AUDITFED_FUZZ_EXAMPLES=500 pytest tests/hardening/test_fuzz_api.py``, and set
``AUDITFED_FUZZ_RANDOM=1`` to explore new cases on each run instead of the fixed ones.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from support.server import Server

EXAMPLES = int(os.environ.get("AUDITFED_FUZZ_EXAMPLES", "15"))
DERANDOMIZE = os.environ.get("AUDITFED_FUZZ_RANDOM", "") != "1"
#: Every kind of caller: no token, the three roles, and an enrolled federation node (its
#: token only opens /v1/federation/nodes/{name}/...; a compromised node sends anything).
ROLES = ("none", "source", "auditor", "admin", "node")
NODE = "fuzz-node"
# Not negative_data_rejection: pydantic's lax parsing takes ``size=0.0`` as the integer 0,
# which is lenient, not wrong.
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]

@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server for the whole fuzz, with a few events so reads have something to find."""
    server = Server(tmp_path_factory.mktemp("fuzz") / "data").start()
    now = datetime.now(UTC).isoformat()
    events = [{"time": now, "action": "db.query", "outcome": "success", "actor": {"id": "alice", "type": "user"},
               "resource": {"type": "table", "id": f"t{i}"}, "source": {"service": "fuzz-api"}} for i in range(3)]
    with server.client(server.admin_token) as http:
        assert http.post("/v1/events", json=events).status_code == 200
    yield server
    server.stop()


@pytest.fixture(scope="module")
def tokens(fuzz_server: Server) -> dict[str, str | None]:
    from auditfed.ledger import Signer

    key = Signer.generate(f"{NODE}.example/log").verifier_key()
    with fuzz_server.client(fuzz_server.admin_token) as http:
        enrolled = http.post("/v1/federation/nodes", json={"name": NODE, "key": key})
    assert enrolled.status_code == 201, enrolled.text
    return {"none": None, "admin": fuzz_server.admin_token, "auditor": fuzz_server.token("auditor"),
            "source": fuzz_server.token("source", service="fuzz-api", environment="fuzz"),
            "node": enrolled.json()["token"]}


@pytest.fixture(scope="module", params=ROLES)
def api_schema(request: pytest.FixtureRequest, fuzz_server: Server,
               tokens: dict[str, str | None]) -> schemathesis.BaseSchema:
    """The server's own OpenAPI document, every request sent with one role's token."""
    schema = schemathesis.openapi.from_url(f"{fuzz_server.url}/openapi.json")
    token = tokens[request.param]
    schema.config.update(headers={"Authorization": f"Bearer {token}"} if token else {}, request_timeout=60)
    return schema


# An SSE stream never ends by design; its limits are tested by the limits branch's tests.
schema = schemathesis.pytest.from_fixture("api_schema").exclude(path="/v1/alerts/stream")


@pytest.fixture
def role(request: pytest.FixtureRequest) -> str:
    """The role the current fuzz test sends as (the ``api_schema`` parameter)."""
    return request.node.callspec.params["api_schema"]


@schema.parametrize()
@settings(max_examples=EXAMPLES, derandomize=DERANDOMIZE, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
def test_no_route_answers_5xx_or_off_contract(case: Any, role: str) -> None:
    if role == "node" and "name" in (case.path_parameters or {}):
        case.path_parameters["name"] = NODE  # its own name: past the token check, into the batch decoder
    case.validate_response(case.call(), checks=CHECKS)


def test_server_is_alive_and_healthy_after_the_fuzz(fuzz_server: Server) -> None:
    assert fuzz_server.process is not None and fuzz_server.process.poll() is None, "the server died"
    answer = httpx.get(f"{fuzz_server.url}/healthz", timeout=30)
    assert answer.status_code == 200 and answer.json()["status"] == "ok"
    unhandled = Path(fuzz_server.log_path).read_text(errors="replace").count('"message":"unhandled error"')
    assert unhandled == 0, f"{unhandled} unhandled errors in the server log"


# --- the 500s the fuzz found, one regression test each ---------------------------------------------


def _assert_problem(answer: httpx.Response, status: int) -> None:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["status"] == status and answer.json()["detail"]


def test_consistency_proof_from_the_empty_tree_is_a_400(fuzz_server: Server, tokens: dict[str, str | None]) -> None:
    with fuzz_server.client(tokens["auditor"]) as http:
        _assert_problem(http.get("/v1/log/proof/consistency", params={"old": 0, "new": 1}), 400)
        assert http.get("/v1/log/proof/consistency", params={"old": 0, "new": 0}).json()["hashes"] == []


def test_token_expiry_beyond_any_date_is_a_400(fuzz_server: Server) -> None:
    with fuzz_server.client(fuzz_server.admin_token) as http:
        body = {"role": "source", "service": "fuzz-api", "expires_in_seconds": 10**12}
        _assert_problem(http.post("/v1/tokens", json=body), 400)
        assert http.post("/v1/tokens", json={**body, "expires_in_seconds": 3600}).status_code == 201


def test_k8s_record_with_a_list_stage_is_a_record_error_not_a_500(fuzz_server: Server,
                                                                  tokens: dict[str, str | None]) -> None:
    record = {"kind": "Event", "apiVersion": "audit.k8s.io/v1", "auditID": "a1", "stage": ["ResponseComplete"],
              "verb": "get", "requestURI": 7, "objectRef": {"resource": "pods", "subresource": ["log"]},
              "user": {"username": "alice"}, "stageTimestamp": "2026-11-27T10:00:00Z"}
    with fuzz_server.client(tokens["source"]) as http:
        answer = http.post("/v1/ingest/k8s-audit", json=[record])
    assert answer.status_code in (200, 422), answer.text  # mapped, or refused as a record: never a 500


def test_federation_batch_with_non_string_hashes_is_a_400(fuzz_server: Server, tokens: dict[str, str | None]) -> None:
    with fuzz_server.client(tokens["node"]) as http:
        batch = {"start": 0, "leaves": [], "checkpoint": "x", "proof": [{"not": "a hash"}]}
        _assert_problem(http.post(f"/v1/federation/nodes/{NODE}/entries", json=batch), 400)
