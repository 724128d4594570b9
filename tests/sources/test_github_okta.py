"""GitHub audit log and Okta System Log entries (shapes as documented) -> auditfed events."""

from __future__ import annotations

import orjson

from auditfed.event import validate_event
from auditfed.sources import decode

# GitHub Docs, "Streaming the audit log" / audit log export examples
GITHUB = [
    {
        "@timestamp": 1716203287012,
        "_document_id": "Xr0vyvg2Nm5vZsq1gTRvGQ",
        "action": "repo.destroy",
        "actor": "octocat",
        "actor_id": 583231,
        "actor_ip": "192.0.2.10",
        "actor_location": {"country_code": "US"},
        "business": "octo-business",
        "created_at": 1716203287012,
        "operation_type": "remove",
        "org": "octo-org",
        "repo": "octo-org/octo-repo",
        "user_agent": "Mozilla/5.0",
        "request_id": "0F2E:1A2B:3C4D",
    },
    {
        "@timestamp": 1716203300000,
        "_document_id": "p8i1c2lH0mRxV3Ukb7sxBw",
        "action": "org.add_member",
        "actor": "dependabot[bot]",
        "created_at": 1716203300000,
        "org": "octo-org",
        "user": "hubot",
        "hashed_token": "k7e0Y1vV5r1a2ZOq2W8e/Jh3rS1Tq5Sx1uG5kO+8rOo=",
    },
]

# Okta Developer docs, System Log API, LogEvent example
OKTA = {
    "uuid": "dc9fd3c0-598c-11ef-8478-2b7584bf8d5a",
    "published": "2024-08-13T15:58:20.353Z",
    "eventType": "user.session.start",
    "version": "0",
    "displayMessage": "User login to Okta",
    "severity": "INFO",
    "actor": {"id": "00u1qw1mqitPHM8AJ0g7", "type": "User",
              "alternateId": "alice@corp.example", "displayName": "Alice"},
    "client": {"userAgent": {"rawUserAgent": "Mozilla/5.0", "os": "Mac OS X",
                             "browser": "CHROME"},
               "zone": "null", "device": "Computer", "ipAddress": "203.0.113.7",
               "geographicalContext": {"city": "Toronto", "country": "Canada"}},
    "outcome": {"result": "SUCCESS", "reason": None},
    "target": [{"id": "00u1qw1mqitPHM8AJ0g7", "type": "User",
                "alternateId": "alice@corp.example", "displayName": "Alice"}],
    "transaction": {"type": "WEB", "id": "ZrsH3B9xg2zZ1fJqL6Yq0QAAA7s"},
    "authenticationContext": {"externalSessionId": "102bZDNFfWaQSyEZQuDgWt-uQ",
                              "credentialType": "PASSWORD"},
    "debugContext": {"debugData": {"requestUri": "/api/v1/authn"}},
    "request": {"ipChain": [{"ip": "203.0.113.7"}]},
}


def test_github_export_array_and_stream_ndjson():
    for body in (orjson.dumps(GITHUB), b"\n".join(orjson.dumps(e) for e in GITHUB)):
        decoded = decode("github-audit", body, None, {})
        assert decoded.errors == []
        destroy, add = decoded.events
        for event in decoded.events:
            assert validate_event(event) == event
            assert event["source"]["service"] == "github"
            assert event["source"]["account"] == "octo-org"
        assert destroy["action"] == "github.repo.destroy"
        assert destroy["actor"] == {"id": "octocat", "type": "user", "ip": "192.0.2.10",
                                    "user_agent": "Mozilla/5.0"}
        assert destroy["resource"] == {"type": "repository", "id": "octo-org/octo-repo",
                                       "name": "octo-repo"}
        assert destroy["time"] == "2024-05-20T11:08:07.012000Z"
        assert destroy["id"] == "Xr0vyvg2Nm5vZsq1gTRvGQ"
        assert destroy["outcome"] == "success"
        assert destroy["original"] == GITHUB[0]
        assert add["actor"]["type"] == "bot"
        assert add["resource"] == {"type": "user", "id": "hubot", "name": "hubot"}


def test_github_bad_entries():
    body = orjson.dumps([GITHUB[0], {"action": "repo.create"}, {"actor": "x"},
                         {**GITHUB[0], "created_at": "yesterday", "@timestamp": None}])
    decoded = decode("github-audit", body, None, {})
    assert len(decoded.events) == 1
    assert [e.position for e in decoded.errors] == [1, 2, 3]
    assert "without actor" in decoded.errors[0].message


def test_okta_system_log():
    decoded = decode("okta", orjson.dumps([OKTA]), "application/json", {})
    [event] = decoded.events
    assert validate_event(event) == event
    assert event["action"] == "okta.user.session.start"
    assert event["actor"] == {"id": "alice@corp.example", "type": "user", "ip": "203.0.113.7",
                              "user_agent": "Mozilla/5.0",
                              "session": "102bZDNFfWaQSyEZQuDgWt-uQ"}
    assert event["outcome"] == "success"
    assert event["id"] == OKTA["uuid"]
    assert event["request_id"] == "ZrsH3B9xg2zZ1fJqL6Yq0QAAA7s"
    assert event["resource"] == {"type": "User", "id": "alice@corp.example", "name": "Alice"}
    assert event["time"] == "2024-08-13T15:58:20.353000Z"
    assert event["source"] == {"service": "okta", "kind": "okta"}


def test_okta_outcomes():
    cases = {"FAILURE": "failure", "DENY": "denied", "ALLOW": "success", "CHALLENGE": "unknown"}
    records = [{**OKTA, "uuid": str(i), "outcome": {"result": r, "reason": "INVALID_CREDENTIALS"}}
               for i, r in enumerate(cases)]
    events = decode("okta", b"\n".join(orjson.dumps(r) for r in records), None, {}).events
    assert [e["outcome"] for e in events] == list(cases.values())
    assert events[1]["policy"] == {"decision": "deny", "enforcer": "okta",
                                   "reason": "INVALID_CREDENTIALS"}
    bad = decode("okta", orjson.dumps([OKTA, {"eventType": "x"}]), None, {})
    assert len(bad.events) == 1 and "actor" in bad.errors[0].message
