"""Settings precedence (flag > environment > TOML > default) and the query language."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from auditfed.config import load_settings
from auditfed.errors import ConfigError, InvalidInput
from auditfed.query.language import MAX_TERMS, parse_query
from auditfed.store.filters import SQLITE, And, Not, Or, Term, compile_where


def test_flag_beats_environment_beats_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "a.toml"
    config.write_text('listen = "0.0.0.0:9000"\nmax_body_bytes = 4096\nfsync = false\n')
    monkeypatch.setenv("AUDITFED_MAX_BODY_BYTES", "8192")
    settings = load_settings(config, listen="127.0.0.1:1")
    assert settings.listen == "127.0.0.1:1"      # flag
    assert settings.max_body_bytes == 8192        # environment
    assert settings.fsync is False                # file
    assert settings.checkpoint_interval == 0.5    # default


def test_config_errors_name_the_setting(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("max_body_bytes = 'lots'\n")
    with pytest.raises(ConfigError, match="max_body_bytes"):
        load_settings(config)
    config.write_text("no_such_setting = 1\n")
    with pytest.raises(ConfigError, match="no_such_setting"):
        load_settings(config)
    config.write_text("this is not toml")
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(config)


NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def test_terms_are_anded_by_default() -> None:
    assert parse_query("action:db.* actor:alice", now=NOW) == And(
        (Term("action", "db.*"), Term("actor", "alice"))
    )


def test_or_not_parentheses_and_relative_time() -> None:
    expr = parse_query('(service:a OR service:"b c") NOT env:dev time>=now-1h', now=NOW)
    assert expr == And((
        Or((Term("service", "a"), Term("service", "b c"))),
        Not(Term("env", "dev")),
        Term("time", "2026-11-27T11:00:00.000000Z", ">="),
    ))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("alice", "not a term"),
        ("colour:red", "unknown field"),
        ("(action:a", "parenthesis"),
        ("action:a)", "unexpected"),
        ("time>=yesterday", "not a time"),
        ("action>=b", "comparisons are for time only"),
        ("x" * 5000, "longer than"),
        (" ".join(["action:a"] * (MAX_TERMS + 1)), "at most"),
        ("(" * 50 + "action:a" + ")" * 50, "nested deeper"),
        ("NOT", "ends where a term"),
    ],
)
def test_bad_queries_are_clear_errors(text: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        parse_query(text, now=NOW)


def test_values_only_ever_become_parameters() -> None:
    hostile = "x' OR '1'='1"
    sql, params = compile_where(parse_query(f'resource:"{hostile}" action:a*[]?', now=NOW), SQLITE)
    assert hostile not in sql and params[0] == hostile
    assert params[1] == "a*[[][]][?]"  # GLOB specials other than * are literal
