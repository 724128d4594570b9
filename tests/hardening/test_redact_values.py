"""Secrets recognised by value (issue #16, item 6): shapes, non-secrets, sample data, hostile input.

The through-the-server cases (every source) are in test_redact_sources.py; here the
detectors themselves: each secret shape becomes ``[REDACTED:<kind>]``, harmless values
(UUIDs, digests, trace ids, ARNs, ordinary SQL) stay, the real sample files get only the
redactions listed below, the one-scan trigger never misses what a detector would find,
and hostile input costs linear time (RE2).
"""

from __future__ import annotations

import re
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
import re2

from auditfed.event import canonical_event_bytes, validate_event
from auditfed.sources import RecordError, decode
from auditfed.sources import secrets as S
from auditfed.sources.redaction import Redactor, is_secret_key
from auditfed.sources.secrets import may_hold_secret, redact_text, redact_values

DATA = Path(__file__).resolve().parent.parent / "data"
SALT = b"per-log-secret-salt-0123456789"

AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
JWT = ("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4ifQ."
       "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c")
PEM = ("-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA75Ph1kL9p2gT\nProc-Type: 4,ENCRYPTED\n"
       "q0r3Vg8tT5Ad\n-----END RSA PRIVATE KEY-----")

#: (text, the secret inside it, the kind it is redacted as)
SECRETS: list[tuple[str, str, str]] = [
    ("ALTER ROLE app WITH PASSWORD 'Pg-Secret-1'", "Pg-Secret-1", "password"),
    ("CREATE USER bob PASSWORD 'bob''s-pw' VALID UNTIL 'infinity'", "bob''s-pw", "password"),
    ("ALTER USER bob ENCRYPTED PASSWORD 'md5a1b2c3d4e5'", "md5a1b2c3d4e5", "password"),
    ("CREATE ROLE carol LOGIN PASSWORD 'SCRAM-SHA-256$4096:c2FsdA==$c3RvcmVk:c2VydmVy'",
     "SCRAM-SHA-256$4096", "password"),  # what psql's \password sends
    ("ALTER USER u encrypted /* why */PASSWORD\n'md5ffff0000'", "md5ffff0000", "password"),
    ("ALTER ROLE r PASSWORD E'it\\'s-Secret'", "s-Secret", "password"),
    ("ALTER ROLE r PASSWORD $$Dollar-Secret$$", "Dollar-Secret", "password"),
    ("CREATE USER m IDENTIFIED BY 'My-Sql-Secret'", "My-Sql-Secret", "password"),
    ("CREATE SERVER s ... OPTIONS (user 'u', password 'Fdw-Secret')", "Fdw-Secret", "password"),
    ("ALTER ROLE r PASSWORD 'cut-off-Secret", "cut-off-Secret", "password"),
    ("host=db user=app password=Conn-Secret sslmode=require", "Conn-Secret", "password"),
    ('{"db": {"password": "Json-In-Text-Secret"}}', "Json-In-Text-Secret", "password"),
    ("https://alice:Url-Secret@git.example.com/repo.git", "Url-Secret", "url-password"),
    ("https://api.example.com/v1?user=x&access_token=Qs-Secret-1&page=2", "Qs-Secret-1", "url-secret"),
    ("GET /cb?api_key=Qs-Secret-2", "Qs-Secret-2", "url-secret"),
    ("https://b.s3.amazonaws.com/k?X-Amz-Signature=0a1b2c3d4e5f&X-Amz-Expires=60", "0a1b2c3d4e5f", "url-secret"),
    ("https://acct.blob.core.windows.net/c/b?sv=2022&sig=Sas%2FSecret%3D", "Sas%2FSecret", "url-secret"),
    ("/ws?token=Qs-Secret-3", "Qs-Secret-3", "url-secret"),
    (f"login with {JWT} now", JWT, "jwt"),
    (f"key:\n{PEM}\nend", "MIIEpAIBAAKCAQEA75Ph1kL9p2gT", "private-key"),
    ("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA", "b3BlbnNzaC1rZXkt", "private-key"),
    ("export AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE", "AKIAIOSFODNN7EXAMPLE", "aws-access-key"),
    (f"aws_secret_access_key = {AWS_SECRET}", AWS_SECRET, "aws-secret-key"),
    (f'{{"SecretAccessKey": "{AWS_SECRET}"}}', AWS_SECRET, "aws-secret-key"),
    ("git push https://ghp_" + "a1B2" * 9 + "@github.com", "ghp_" + "a1B2" * 9, "github-token"),
    ("token gho_" + "Z9y8" * 9, "gho_" + "Z9y8" * 9, "github-token"),
    ("ghs_" + "x" * 36, "ghs_" + "x" * 36, "github-token"),
    ("github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz0123456789",
     "github_pat_11ABCDEFG0123456789", "github-token"),
    ("glpat-" + "Ab1_" * 5, "glpat-" + "Ab1_" * 5, "gitlab-token"),
    ("slack xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx", "xoxb-123456789012", "slack-token"),
    ("https://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX",
     "T00000000/B00000000/XXXX", "slack-webhook"),
    ("stripe sk_live_" + "4eC39HqLyjWDarjtT1zdp7dc", "sk_live_4eC39Hq", "stripe-key"),
    ("maps AIzaSyA-1234567890abcdefghijklmnopqrstu", "AIzaSyA-1234567890abcdefghijklmnopqrstu", "google-api-key"),
    ("GOCSPX-" + "a" * 28, "GOCSPX-" + "a" * 28, "google-oauth-secret"),
    ("sk-proj-" + "Ab1" * 10 + "T3BlbkFJ" + "Zz9" * 8, "T3BlbkFJ", "openai-key"),
    ("sk-ant-api03-" + "Ab1" * 12, "sk-ant-api03-Ab1", "anthropic-key"),
    ("SG." + "a" * 22 + "." + "b" * 43, "SG." + "a" * 22, "sendgrid-key"),
    ("//registry.npmjs.org/:_authToken=npm_" + "A1" * 18, "npm_" + "A1" * 18, "npm-token"),
    ("pypi-AgEIcHlwaS5vcmc" + "x" * 60, "pypi-AgEIcHlwaS5vcmc", "pypi-token"),
    ("DefaultEndpointsProtocol=https;AccountName=a;AccountKey=" + "k" * 86 + "==;", "k" * 86, "azure-storage-key"),
    ("Authorization: Basic YWxhZGRpbjpvcGVuc2VzYW1l", "YWxhZGRpbjpvcGVuc2VzYW1l", "authorization"),
    ("curl -H 'Authorization: Bearer Tok-Secret-123'", "Tok-Secret-123", "authorization"),
    ("sent Bearer abcdefghijklmnop0123 to upstream", "abcdefghijklmnop0123", "bearer-token"),
    ("Cookie: session=Cookie-Secret-1; theme=dark", "Cookie-Secret-1", "cookie"),
    ("client_secret=Client-Secret-1", "Client-Secret-1", "secret"),
    ("api_key: Yaml-Secret-1", "Yaml-Secret-1", "secret"),
]

#: Look like secrets to a careless detector; are not.
HARMLESS = [
    "123e4567-e89b-12d3-a456-426614174000",
    "sha256:" + "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
    "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
    "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7",
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    "arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/db-password-AbCdEf",
    "arn:aws:iam::123456789012:role/token-refresher",
    "SELECT id, password_changed_at FROM users WHERE name = 'bob'",
    "CREATE TABLE account (id int, password TEXT, description TEXT)",
    "CREATE USER regress_user1 password <REDACTED>",
    "ALTER ROLE app PASSWORD NULL",
    "/api/v1/namespaces/default/secrets/db-credentials?timeout=30s",
    "https://host.example:8443/path/to/thing?page=2&limit=10",
    "the token was rotated; secret rotation policy applies",
    "AKIAIOSFODNN7EXAMPLE",  # an access key id on its own is kept (it names the key)
    "GetSecretValue", "secretsmanager.amazonaws.com", "password reset requested for bob",
    "MzFiNGQ0YjctMDAyNi00YzI3LWJiMGItNDk5ZDZkZjg1ZGJi",
]


@pytest.mark.parametrize(("text", "secret", "kind"), SECRETS, ids=[s[2] + "-" + str(i) for i, s in enumerate(SECRETS)])
def test_each_secret_shape_is_redacted_with_its_kind(text: str, secret: str, kind: str) -> None:
    out = redact_text(text)
    assert secret not in out
    assert f"[REDACTED:{kind}]" in out
    assert redact_text(out) == out  # idempotent: a stored event redacts to itself


@pytest.mark.parametrize("text", HARMLESS)
def test_harmless_values_are_kept(text: str) -> None:
    assert redact_text(text) == text


def _event(value: Any) -> dict[str, Any]:
    return {"action": "x.y", "actor": {"id": "a"}, "source": {"service": "s"},
            "outcome": "success", "id": "e1", "time": "2026-01-01T00:00:00Z",
            "attributes": {"note": value}, "original": {"deep": [{"k": [value]}]}}


@pytest.mark.parametrize(("text", "secret", "kind"), SECRETS, ids=[s[2] + "-" + str(i) for i, s in enumerate(SECRETS)])
def test_the_one_scan_trigger_never_misses_a_detector(text: str, secret: str, kind: str) -> None:
    """The trigger reads JSON bytes (quotes as \\", newlines as \\n): it must still see each secret."""
    for variant in (text, text.replace(" ", "\n"), text.replace(" ", "\t"), '"' + text + '"',
                    text.replace("'", '"'), "\n" + text):
        if redact_text(variant) == variant:
            continue  # the variant changed the shape itself (e.g. a quote style SQL lacks)
        event = _event(variant)
        data = canonical_event_bytes(event)
        assert may_hold_secret(data), variant
        stored = canonical_event_bytes(redact_values(event))
        assert secret.encode() not in stored


def test_secret_like_member_names() -> None:
    for name in ("password_hash", "private_key_pem", "jwt", "secretValue", "secret-value", "SecretString",
                 "tokenValue", "client_secret", "X-Api-Key", "DB_PASSWORD", "api_key_hash", "set-cookie"):
        assert is_secret_key(name), name
    # names that describe a secret (which one, when, how strong) are kept: auditors need them
    for name in ("password_policy", "token_id", "key_id", "secretName", "secretId", "secretArn",
                 "passwordLastUsed", "minimumPasswordLength", "accessKeyId", "tokenType",
                 "authorization.k8s.io/decision", "rbac.authorization.kubernetes.io/autoupdate"):
        assert not is_secret_key(name), name


def test_name_value_pairs_in_any_casing_and_k8s_json_patch() -> None:
    redactor = Redactor(None, SALT)
    event = _event(None)
    event["attributes"] = {"headers": [
        {"name": "Authorization", "value": "Bearer hdr-secret-1"},
        {"Name": "Set-Cookie", "Value": "sid=hdr-secret-2"},
        {"NAME": "x-api-key", "VALUE": "hdr-secret-3"},
        {"key": "Proxy-Authorization", "value": "Basic hdr-secret-4"},
        {"name": "Accept", "value": "application/json"}],
        "http.request.header.cookie": ["sid=hdr-secret-5"]}
    event["original"] = {"objectRef": {"resource": "secrets"}, "requestObject": [
        {"op": "replace", "path": "/data/access-key", "value": "cGF0Y2gtc2VjcmV0"},
        {"op": "add", "path": "/stringData", "value": {"k": "patch-secret-2"}}]}
    data = orjson.dumps(redactor.apply(event))
    for secret in (b"hdr-secret", b"cGF0Y2gtc2VjcmV0", b"patch-secret-2"):
        assert secret not in data
    assert b"application/json" in data and b"/data/access-key" in data


def _sample_events() -> dict[str, list[dict[str, Any]]]:
    def decoded(fmt: str, paths: list[Path]) -> list[dict[str, Any]]:
        items = [i for p in paths for i in decode(fmt, p.read_bytes(), None, {}).items]
        return [validate_event(i) for i in items if not isinstance(i, RecordError)]

    text = (DATA / "pgaudit" / "pgaudit.out").read_text()
    text = re.sub(r"(?m)^(NOTICE|WARNING|ERROR|LOG|INFO):  ",
                  r"2026-11-27 10:00:00.000 UTC [4242] regress@contrib_regression \1:  ", text)
    return {
        "cloudtrail": decoded("cloudtrail", sorted((DATA / "cloudtrail/stratus-red-team").glob("*.json"))),
        "k8s-audit": decoded("k8s-audit", sorted((DATA / "k8s-audit").glob("*.json"))),
        "pgaudit": [validate_event(e) for e in decode("pgaudit", text.encode(), None, {}).events],
    }


def _redactions(before: Any, after: Any, path: str = "") -> Counter[tuple[str, str]]:
    """(member path, kind) of every value that redaction changed."""
    found: Counter[tuple[str, str]] = Counter()
    if isinstance(before, dict):
        for key, value in before.items():
            found += _redactions(value, after.get(key), f"{path}.{key}")
    elif isinstance(before, list):
        for b, a in zip(before, after, strict=True):
            found += _redactions(b, a, path + "[]")
    elif before != after:
        kinds = re.findall(r"\[REDACTED:([a-z-]+)\]", str(after)) or ["hmac"]
        found.update((path, kind) for kind in set(kinds))
    return found


def test_sample_data_gets_only_the_expected_redactions() -> None:
    """False positives on real data: CloudTrail, Kubernetes and pgaudit samples."""
    redactor = Redactor(None, SALT)
    expected = {
        # credentials and tokens the API returned or took; AWS key ids (actor.session,
        # userIdentity.accessKeyId), ARNs, UUIDs, digests and ordinary fields are kept
        "cloudtrail": {(".original.responseElements.credentials.sessionToken", "hmac"): 9,
                       (".original.requestParameters.nextToken", "hmac"): 4,
                       (".original.responseElements.tokenValue", "hmac"): 3,
                       (".original.requestParameters.clientToken", "hmac"): 1},
        # the Secret's data, in request and response; the authorization annotations stay
        "k8s-audit": {(".original.requestObject.data.access-key", "hmac"): 1,
                      (".original.responseObject.data.access-key", "hmac"): 1},
        # `UPDATE account SET password = 'HASH4'` in pgaudit's test: a password column's value
        "pgaudit": {(".attributes.db.statement", "password"): 12, (".original.line", "password"): 12},
    }
    for name, events in _sample_events().items():
        found: Counter[tuple[str, str]] = Counter()
        for event in events:
            after = redactor.apply(event)
            data = canonical_event_bytes(after)
            if may_hold_secret(data):
                after = redact_values(after)
            found += _redactions(event, after)
        assert dict(found) == expected[name], name


HOSTILE = [
    "password" * 20000, "'" * 100000, "password '" + "''" * 50000, "a://" * 40000,
    "https://" + "a:" * 50000, "?token=" * 20000, "eyJ" + "a." * 50000, "-----BEGIN PRIVATE KEY-----" * 5000,
    "Authorization: " * 10000, "$" * 100000, "PASSWORD /*" + "*" * 100000, "AKIA" * 40000,
    ("password=" + "x" * 30 + " ") * 5000,
]


def test_every_built_in_pattern_is_linear_time() -> None:
    """RE2, not a backtracking engine: hostile strings of ~100-400 KB are scanned at once."""
    assert all(isinstance(p, re2._Regexp) for p in (S._PATTERN, S._ANY, S._TRIGGER))
    started = time.monotonic()
    for text in HOSTILE:
        redact_text(text)
        may_hold_secret(text.encode())
    # a generous bound (Python's re on such input runs for minutes or hours)
    assert time.monotonic() - started < 60
