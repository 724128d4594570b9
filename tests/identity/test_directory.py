"""One principal across GitHub, Kubernetes, AWS, PostgreSQL and IdP names."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from auditfed.errors import ConfigError
from auditfed.identity.directory import Directory, Pattern, parse_alias, system_for_source

CONFIG = """
[directory]
case_insensitive = ["github", "okta"]

[directory.principals]
"alice@corp.example" = [
  "github:alice",
  "k8s:oidc:alice@corp.example",
  "aws:arn:aws:iam::123456789012:user/alice",
  "pg:alice_rw",
  "okta:alice@corp.example",
]
"bob@corp.example" = ["github:bobby", "pg:bob"]

[[directory.rules]]
system = "aws"
pattern = "arn:aws:sts::*:assumed-role/*/{name}"
principal = "{name}@corp.example"
lower = true

[[directory.rules]]
system = "k8s"
pattern = "oidc:{user:[^@/]+}@corp.example"
principal = "{user}@corp.example"

[[directory.rules]]
system = "okta"
pattern = "{user}@corp.example"
principal = "{user}@corp.example"

[directory.sources]
"billing-api" = "okta"
"""


@pytest.fixture
def directory() -> Directory:
    return Directory.from_config(tomllib.loads(CONFIG)["directory"])


@pytest.mark.parametrize(
    ("system", "actor_id"),
    [
        ("github", "alice"),
        ("github", "Alice"),  # GitHub logins are case-insensitive
        ("k8s", "oidc:alice@corp.example"),
        ("aws", "arn:aws:iam::123456789012:user/alice"),
        ("aws", "arn:aws:sts::123456789012:assumed-role/dev/alice"),  # rule
        ("aws", "arn:aws:sts::210987654321:assumed-role/AdminSSO/Alice"),  # rule, lowered
        ("pg", "alice_rw"),
        ("okta", "ALICE@corp.example"),
    ],
)
def test_alias_resolution_across_systems(directory: Directory, system: str, actor_id: str) -> None:
    assert directory.resolve(system, actor_id) == "alice@corp.example"


def test_unlinked_and_wrong_system(directory: Directory) -> None:
    assert directory.resolve("pg", "alice") is None  # pg names are case-/exact-sensitive
    assert directory.resolve("pg", "ALICE_RW") is None
    assert directory.resolve("github", "alice_rw") is None
    assert directory.resolve("aws", "arn:aws:iam::123456789012:user/mallory") is None
    # the rule only matches a whole assumed-role ARN with a session name
    assert directory.resolve("aws", "arn:aws:sts::123:assumed-role/dev") is None
    assert directory.resolve("aws", "arn:aws:sts::123:assumed-role/dev/a/b") is None
    assert directory.resolve("k8s", "oidc:alice@evil.example") is None
    assert directory.resolve("k8s", "system:serviceaccount:payments:api") is None


def test_exact_links_win_over_rules(directory: Directory) -> None:
    assert directory.resolve("k8s", "oidc:bob@corp.example") == "bob@corp.example"  # rule
    directory.link("robert@corp.example", "k8s", "oidc:bob@corp.example")
    assert directory.resolve("k8s", "oidc:bob@corp.example") == "robert@corp.example"


def test_source_kind_namespaces(directory: Directory) -> None:
    assert system_for_source("k8s-audit") == "k8s"
    assert system_for_source("cloudtrail") == "aws"
    assert system_for_source("pgaudit") == "pg"
    assert system_for_source("github-audit") == "github"
    assert system_for_source("okta") == "okta"
    for kind in ("otel", "app", "cloudevents"):
        assert system_for_source(kind) == "app"
    assert directory.system_for("app", "billing-api") == "okta"
    assert directory.resolve_source("pgaudit", "alice_rw") == "alice@corp.example"
    assert directory.resolve_source("cloudtrail", "arn:aws:sts::1:assumed-role/r/bob") == "bob@corp.example"
    assert directory.resolve_source("app", "alice@corp.example", service="billing-api") == "alice@corp.example"


def test_aliases_for_query_expansion(directory: Directory) -> None:
    assert set(directory.aliases("alice@corp.example")) == {
        ("github", "alice"),
        ("k8s", "oidc:alice@corp.example"),
        ("aws", "arn:aws:iam::123456789012:user/alice"),
        ("pg", "alice_rw"),
        ("okta", "alice@corp.example"),
    }
    assert directory.alias_patterns("alice@corp.example") == [
        ("aws", "arn:aws:sts::*:assumed-role/*/alice"),
        ("k8s", "oidc:alice@corp.example"),
        ("okta", "alice@corp.example"),
    ]
    assert directory.aliases("nobody@corp.example") == []


def test_events_stored_before_the_link_are_found(directory: Directory) -> None:
    """Stored events keep their raw actor ids; a later link makes them findable by
    principal because the query expands the principal into its aliases."""
    stored = [  # as the store holds them: actor id + source kind, principal unresolved
        {"kind": "pgaudit", "actor": "carol_admin", "principal": None},
        {"kind": "github-audit", "actor": "carol-gh", "principal": None},
        {"kind": "pgaudit", "actor": "dave", "principal": None},
    ]
    assert directory.resolve("pg", "carol_admin") is None

    def query(principal: str) -> list[dict]:
        aliases = set(directory.aliases(principal))
        return [
            e for e in stored if e["principal"] == principal or (system_for_source(e["kind"]), e["actor"]) in aliases
        ]

    assert query("carol@corp.example") == []
    directory.link("carol@corp.example", "pg", "carol_admin")
    directory.link("carol@corp.example", "github", "carol-gh")
    assert [e["actor"] for e in query("carol@corp.example")] == ["carol_admin", "carol-gh"]
    assert directory.resolve("pg", "carol_admin") == "carol@corp.example"  # cache invalidated


def test_conflicting_link_rejected(directory: Directory) -> None:
    directory.link("alice@corp.example", "github", "alice")  # idempotent
    with pytest.raises(ConfigError):
        directory.link("mallory@corp.example", "github", "ALICE")


def test_unlink(directory: Directory) -> None:
    assert directory.resolve("pg", "bob") == "bob@corp.example"
    directory.unlink("pg", "bob")
    assert directory.resolve("pg", "bob") is None
    assert ("pg", "bob") not in directory.aliases("bob@corp.example")


def test_directory_file_toml_and_json(tmp_path: Path) -> None:
    (tmp_path / "people.toml").write_text(
        '[principals]\n"erin@corp.example" = ["github:erin", "pg:erin_ro"]\n'
        '[[rules]]\nsystem = "aws"\npattern = "arn:aws:sts::*:assumed-role/*/{n}"\nprincipal = "{n}@corp.example"\n'
    )
    d = Directory.from_config({"file": "people.toml", "principals": {"x@corp.example": ["pg:x"]}}, tmp_path)
    assert d.resolve("pg", "erin_ro") == "erin@corp.example"
    assert d.resolve("pg", "x") == "x@corp.example"
    assert d.resolve("aws", "arn:aws:sts::1:assumed-role/r/erin") == "erin@corp.example"
    (tmp_path / "people.json").write_text(
        json.dumps({"principals": [{"principal": "f@corp.example", "aliases": ["github:f"]}]})
    )
    assert Directory.from_config({"file": str(tmp_path / "people.json")}).resolve("github", "F") == "f@corp.example"
    with pytest.raises(ConfigError):
        Directory.from_config({"file": "missing.toml"}, tmp_path)


@pytest.mark.parametrize(
    "bad",
    [
        {"principals": {"a@x": ["no-colon"]}},
        {"rules": [{"system": "aws", "pattern": "{a}", "principal": "{b}@x"}]},
        {"rules": [{"system": "aws", "pattern": "{a:[}", "principal": "{a}"}]},
        {"unknown": 1},
    ],
)
def test_bad_config(bad: dict) -> None:
    with pytest.raises(ConfigError):
        Directory.from_config(bad)


def test_pattern_semantics() -> None:
    p = Pattern("arn:aws:sts::*:assumed-role/*/{name}")
    assert p.match("arn:aws:sts::123456789012:assumed-role/dev/alice") == {"name": "alice"}
    assert p.match("arn:aws:sts::123456789012:assumed-role/dev/alice@corp.example") == {"name": "alice@corp.example"}
    assert p.match("arn:aws:sts::1:assumed-role/a/b/c") is None
    assert Pattern("repo:corp/**").match("repo:corp/app:ref:refs/heads/main") == {}
    assert Pattern("a.b").match("aXb") is None  # literals are literal
    assert parse_alias("k8s:oidc:alice@corp.example") == ("k8s", "oidc:alice@corp.example")


def test_resolution_is_cached_and_fast(directory: Directory) -> None:
    import time

    t = time.perf_counter()
    for _ in range(100_000):
        directory.resolve("aws", "arn:aws:sts::123456789012:assumed-role/dev/alice")
    assert (time.perf_counter() - t) / 100_000 < 5e-6
