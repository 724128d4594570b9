"""Redaction by JSON path: drop, hash (HMAC-SHA256 with the log's salt), mask; defaults."""

from __future__ import annotations

import copy
import hashlib
import hmac

import orjson
import pytest

from auditfed.errors import ConfigError
from auditfed.sources.redaction import DEFAULT_RULES, Redactor, Rule, is_secret_key, parse_path

SALT = b"per-log-secret-salt-0123456789"


def event(**extra):
    base = {
        "action": "http.request",
        "actor": {"id": "alice"},
        "source": {"service": "api"},
        "attributes": {
            "headers": {"Authorization": "Bearer eyJhbGciOi", "Accept": "*/*"},
            "db": {"password": "hunter2", "user": "app", "password_last_used": None},
            "creds": {"secretAccessKey": "wJalrXUtnFEMI", "accessKeyId": "AKIAEXAMPLE"},
            "list": [{"api_key": "k-1"}, {"name": "x"}],
            "secretId": "prod/db",
            "token_id": 42,
        },
        "original": {"requestParameters": {"userName": "bob", "newPassword": "S3cret!"}},
    }
    base.update(extra)
    return base


def test_defaults_hash_password_like_keys_and_authorization():
    redactor = Redactor(None, SALT)
    source = event()
    before = copy.deepcopy(source)
    out = redactor.apply(source)
    assert source == before  # the input is untouched
    data = orjson.dumps(out)
    for secret in (b"hunter2", b"eyJhbGciOi", b"wJalrXUtnFEMI", b"k-1", b"S3cret!"):
        assert secret not in data
    attrs = out["attributes"]
    digest = "[redacted:hmac-sha256:" + hmac.new(SALT, b"hunter2", hashlib.sha256).hexdigest() + "]"
    assert attrs["db"]["password"] == digest
    assert attrs["db"]["user"] == "app"
    assert attrs["headers"]["Accept"] == "*/*"
    assert attrs["headers"]["Authorization"].startswith("[redacted:hmac-sha256:")
    # names of secrets and ids are kept
    assert attrs["secretId"] == "prod/db"
    assert attrs["token_id"] == 42
    assert attrs["creds"]["accessKeyId"] == "AKIAEXAMPLE"
    assert out["original"]["requestParameters"]["userName"] == "bob"


def test_hash_keeps_equality_and_depends_on_salt():
    a = Redactor(None, SALT).apply(event())
    b = Redactor(None, SALT).apply(event())
    c = Redactor(None, b"another-salt-0123456789").apply(event())
    assert a == b
    assert a["attributes"]["db"]["password"] != c["attributes"]["db"]["password"]
    assert Redactor(None, SALT).apply(a) == a  # idempotent


def test_drop_mask_and_conditions():
    rules = [
        Rule("$.attributes.db.password", "drop"),
        Rule("$.attributes.headers['Authorization']", "mask"),
        Rule("$.attributes.list[*].api_key", "drop"),
        Rule("$.original.requestParameters.userName", "hash",
             when={"$.action": "http.request"}),
        Rule("$.attributes.secretId", "hash", when={"$.action": "other"}),
        Rule("$..[~'new.*']", "mask"),
    ]
    out = Redactor(rules, SALT).apply(event())
    assert "password" not in out["attributes"]["db"]
    assert out["attributes"]["headers"]["Authorization"] == "[redacted]"
    assert out["attributes"]["list"] == [{}, {"name": "x"}]
    assert out["original"]["requestParameters"]["userName"].startswith("[redacted:hmac")
    assert out["attributes"]["secretId"] == "prod/db"  # condition not met
    assert out["original"]["requestParameters"]["newPassword"] == "[redacted]"


def test_rules_from_config_and_errors():
    redactor = Redactor([*DEFAULT_RULES, {"path": "$.actor.ip", "action": "mask"}], SALT)
    out = redactor.apply(event(actor={"id": "alice", "ip": "203.0.113.7"}))
    assert out["actor"]["ip"] == "[redacted]"
    with pytest.raises(ConfigError):
        Rule("attributes.x")
    with pytest.raises(ConfigError):
        Rule("$.x", "encrypt")  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        Redactor(None, b"short")
    with pytest.raises(ConfigError):
        Rule.from_dict({"path": "$.x", "acton": "drop"})


def test_paths_and_key_words():
    assert len(parse_path("$.a['b.c'][*]..d")) == 5
    assert is_secret_key("client_secret") and is_secret_key("X-Api-Key")
    assert not is_secret_key("secretName") and not is_secret_key("passwordLastUsed")


def test_k8s_secret_rules_only_for_secrets():
    record = {"objectRef": {"resource": "configmaps"},
              "requestObject": {"data": {"k": "plain config"}}}
    ev = event(original=record)
    assert Redactor(None, SALT).apply(ev)["original"]["requestObject"]["data"]["k"] == "plain config"
    record["objectRef"]["resource"] = "secrets"
    record["requestObject"]["metadata"] = {"annotations": {
        "kubectl.kubernetes.io/last-applied-configuration": '{"data":{"k":"c2VjcmV0"}}'}}
    record["requestObject"]["stringData"] = {"k2": "secret"}
    out = Redactor(None, SALT).apply(event(original=record))
    data = orjson.dumps(out)
    assert b"plain config" not in data and b"c2VjcmV0" not in data and b'"secret"' not in data
