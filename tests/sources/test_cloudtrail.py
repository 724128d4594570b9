"""AWS CloudTrail (real Stratus Red Team detonation logs) -> auditfed events."""

from __future__ import annotations

from collections import Counter

import orjson
import pytest

from auditfed.event import validate_event
from auditfed.sources import decode

STRATUS = "cloudtrail/stratus-red-team"


def files(data_dir):
    return sorted((data_dir / STRATUS).glob("aws.*.json"))


def test_every_stratus_file_decodes_completely(data_dir):
    total = Counter()
    for path in files(data_dir):
        records = orjson.loads(path.read_bytes())
        decoded = decode("cloudtrail", path.read_bytes(), "application/json", {})
        assert decoded.errors == [], path.name
        events = decoded.events
        assert len(events) == len(records), path.name
        assert [e["id"] for e in events] == [r["eventID"] for r in records]
        for event, record in zip(events, records, strict=True):
            assert validate_event(event) == event
            service = record["eventSource"].split(".")[0]
            assert event["action"] == f"{service}.{record['eventName']}"
            assert event["actor"]["id"] == record["userIdentity"]["arn"]
            assert event["source"]["service"] == f"aws.{service}"
            assert event["source"]["region"] == record["awsRegion"]
            assert event["original"] == record
            total[event["outcome"]] += 1
    assert sum(total.values()) == 310
    # 46 Client.UnauthorizedOperation + 5 AccessDenied; 1 EntityTemporarilyUnmodifiable
    assert total == {"success": 258, "denied": 51, "failure": 1}


def load(data_dir, name):
    return decode("cloudtrail", (data_dir / STRATUS / name).read_bytes(), None, {}).events


def test_create_admin_user(data_dir):
    events = load(data_dir, "aws.persistence.iam-create-admin-user.json")
    assert sorted(e["action"] for e in events) == [
        "iam.AttachUserPolicy", "iam.CreateAccessKey", "iam.CreateUser"]
    for event in events:
        assert event["actor"]["id"] == "arn:aws:iam::229654561268:user/christophe"
        assert event["actor"]["type"] == "user"
        assert event["resource"] == {"type": "iam.user", "id": "malicious-iam-user",
                                     "name": "malicious-iam-user"}
        assert event["source"]["account"] == "229654561268"
        assert event["outcome"] == "success"


def test_assumed_role_chain_and_denied(data_dir):
    events = load(data_dir, "aws.execution.ec2-launch-unusual-instances.json")
    run = [e for e in events if e["action"] == "ec2.RunInstances"]
    assert run and all(e["outcome"] == "denied" for e in run)
    event = run[0]
    assert event["actor"]["type"] == "role"
    assert event["actor"]["id"].startswith("arn:aws:sts::900138736586:assumed-role/")
    assert event["actor"]["chain"] == [{
        "id": "arn:aws:iam::900138736586:role/stratus-red-team-ec2lui-role-idtzskbvtd",
        "type": "role"}]
    assert event["policy"]["decision"] == "deny"
    assert event["attributes"]["aws.error_code"] == "Client.UnauthorizedOperation"
    assume = [e for e in events if e["action"] == "sts.AssumeRole"]
    assert assume[0]["resource"]["type"] == "AWS::IAM::Role"


def test_console_login(data_dir):
    [event] = load(data_dir, "aws.initial-access.console-login-without-mfa.json")
    assert event["action"] == "signin.ConsoleLogin"
    assert event["outcome"] == "success"
    assert event["actor"]["ip"] == "225.01.00.16"
    assert event["original"]["additionalEventData"]["MFAUsed"] == "No"


def test_invoked_by_goes_into_the_chain():
    record = {
        "eventVersion": "1.08", "eventTime": "2024-08-01T10:00:00Z",
        "eventSource": "kms.amazonaws.com", "eventName": "Decrypt",
        "eventID": "e-1", "awsRegion": "eu-west-1", "sourceIPAddress": "lambda.amazonaws.com",
        "userIdentity": {"type": "AssumedRole", "arn": "arn:aws:sts::1:assumed-role/r/alice",
                         "invokedBy": "lambda.amazonaws.com",
                         "sessionContext": {"sessionIssuer": {"type": "Role",
                                                              "arn": "arn:aws:iam::1:role/r"}}},
        "requestParameters": {"keyId": "arn:aws:kms:eu-west-1:1:key/k"},
    }
    [event] = decode("cloudtrail", orjson.dumps(record), None, {}).events
    assert event["actor"]["chain"] == [{"id": "arn:aws:iam::1:role/r", "type": "role"},
                                       {"id": "lambda.amazonaws.com", "type": "service"}]
    assert "ip" not in event["actor"]
    assert event["attributes"]["aws.source_ip_address"] == "lambda.amazonaws.com"
    assert event["resource"] == {"type": "kms.key", "id": "arn:aws:kms:eu-west-1:1:key/k",
                                 "name": "k"}


@pytest.mark.parametrize("shape", ["records", "array", "ndjson", "single"])
def test_body_shapes(data_dir, shape):
    records = orjson.loads((data_dir / STRATUS / "aws.persistence.iam-create-admin-user.json")
                           .read_bytes())
    if shape == "records":
        body = orjson.dumps({"Records": records})
    elif shape == "array":
        body = orjson.dumps(records)
    elif shape == "ndjson":
        body = b"\n".join(orjson.dumps(r) for r in records) + b"\n"
    else:
        records = records[:1]
        body = orjson.dumps(records[0])
    decoded = decode("cloudtrail", body, None, {})
    assert [e["id"] for e in decoded.events] == [r["eventID"] for r in records]


def test_one_broken_record_among_good_ones(data_dir):
    records = orjson.loads((data_dir / STRATUS / "aws.persistence.iam-create-admin-user.json")
                           .read_bytes())
    good = [orjson.dumps(r, option=orjson.OPT_INDENT_2) for r in records]
    broken_syntax = b'{"eventName": "CreateUser", "eventSource": "iam.amazonaws.com" "x": 1}'
    broken_meaning = orjson.dumps({**records[0], "eventTime": "yesterday", "eventID": "bad"})
    body = (b'{"Records": [\n' + b",\n".join([good[0], broken_syntax, good[1], broken_meaning,
                                             good[2]]) + b"\n]}")
    decoded = decode("cloudtrail", body, None, {})
    assert [e["id"] for e in decoded.events] == [r["eventID"] for r in records]
    errors = decoded.errors
    assert [e.position for e in errors] == [1, 3]
    assert "invalid JSON" in errors[0].message
    assert "time" in errors[1].message
    # a record cut short (an unclosed brace) does not swallow the records after it
    cut = good[1][: len(good[1]) // 2]
    body = b"[\n" + b",\n".join([good[0], cut, good[2]]) + b"\n]"
    decoded = decode("cloudtrail", body, None, {})
    assert [e["id"] for e in decoded.events] == [records[0]["eventID"], records[2]["eventID"]]
    assert [e.position for e in decoded.errors] == [1]
    missing = orjson.dumps([records[0], {"eventSource": "iam.amazonaws.com"}])
    decoded = decode("cloudtrail", missing, None, {})
    assert len(decoded.events) == 1
    assert decoded.errors[0].message == "CloudTrail record without eventName"


def test_unreadable_body_is_invalid_input():
    from auditfed.errors import InvalidInput

    for body in (b"", b"not json at all", b"42"):
        with pytest.raises(InvalidInput):
            decode("cloudtrail", body, None, {})
