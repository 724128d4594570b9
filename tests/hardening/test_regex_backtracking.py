"""Issue 16 item 1: no attacker-steered backtracking; decoding CPU bounded per request.

Every regex a request, the configuration or a Sigma rule supplies runs on RE2
(:mod:`auditfed.safe_regex`). Each hostile case below took seconds to hours on
Python's backtracking ``re``; the bounds asserted are generous (the fixed code
answers in milliseconds) so that a loaded machine does not make them flake.
"""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.server import Server

from auditfed.detect import DetectionEngine
from auditfed.detect.matchers import _ONE, _WILD, _glob
from auditfed.detect.rules import load_rules
from auditfed.errors import ConfigError, PayloadTooLarge
from auditfed.identity.directory import Directory, DirectoryRule
from auditfed.safe_regex import RegexRefused, compile_regex
from auditfed.sources import decode
from auditfed.sources.redaction import Redactor, Rule

#: Far above what the fixed code needs, far below what backtracking took.
BOUND_S = 5.0
HOSTILE = "a" * 40 + "!"  # (a|a)* and (a+)+$ take 2^40 steps on this with backtracking
LINE = ("2026-11-27 10:00:01.000 UTC [4243] alice@appdb LOG:  "
        "AUDIT: SESSION,1,1,READ,SELECT,TABLE,public.t,SELECT 1,<none>\n")


@pytest.fixture(scope="module")
def token(server: Server) -> str:
    return server.token("source", service="pg-hostile")


def _ingest_pgaudit(server: Server, token: str, body: bytes, **params: str) -> httpx.Response:
    with server.client(token) as http:
        return http.post("/v1/ingest/pgaudit", content=body, params=params, headers={"Content-Type": "text/plain"})


def _log_size(server: Server) -> int:
    with server.client() as http:
        return int(http.get("/healthz").json()["size"])


def _timed(call: Any) -> tuple[Any, float]:
    start = time.monotonic()
    result = call()
    return result, time.monotonic() - start


# --- requests: pgaudit prefix patterns -------------------------------------------------


@pytest.mark.parametrize("prefix_regex", ["(a|a)*", "(a+)+$", "(a|aa)*(b|c)?"])
def test_hostile_prefix_regex_answers_while_events_are_served(
    server: Server, token: str, prefix_regex: str
) -> None:
    outcome: dict[str, Any] = {}

    def hostile() -> None:
        outcome["answer"], outcome["took"] = _timed(
            lambda: _ingest_pgaudit(server, token, (HOSTILE + "\n").encode(), prefix_regex=prefix_regex)
        )

    thread = threading.Thread(target=hostile)
    thread.start()
    time.sleep(0.2)  # let the hostile request reach its ingest worker first
    normal = {"source": {"service": "pg-hostile"}, "action": "bystander.write", "actor": {"id": "bob"}}
    with server.client(token) as http:
        answer, took = _timed(lambda: http.post("/v1/events", json=normal))
    thread.join(timeout=120)
    assert not thread.is_alive(), "the hostile request did not finish"
    assert answer.status_code == 200 and answer.json()["accepted"] == 1, answer.text
    assert took < BOUND_S, f"a normal POST /v1/events took {took:.1f}s next to a hostile prefix_regex"
    hostile_answer = outcome["answer"]
    # the line does not match the prefix: a per-record error, nothing stored
    assert hostile_answer.status_code == 422, hostile_answer.text
    assert "not a PostgreSQL log line" in hostile_answer.json()["errors"][0]["reason"]
    assert outcome["took"] < BOUND_S, f"the hostile request took {outcome['took']:.1f}s"


def test_hostile_prefix_regex_still_reads_matching_lines(server: Server, token: str) -> None:
    prefix = r"(?:a|a)*(?P<timestamp>\S+ \S+ \S+) \[(?P<pid>\d+)\] (?P<user>[^@]*)@(?P<database>\S*) "
    answer = _ingest_pgaudit(server, token, LINE.encode(), prefix_regex=prefix)
    assert answer.status_code == 200 and answer.json()["accepted"] == 1, answer.text


def test_hostile_log_line_prefix_is_linear(server: Server, token: str) -> None:
    # every %u is a lazy ``.*?``: eight of them backtrack as n^8 on a line without a severity
    line = ("x" * 3000 + "\n").encode()
    answer, took = _timed(lambda: _ingest_pgaudit(server, token, line, log_line_prefix="%u%u%u%u%u%u%u%u "))
    assert answer.status_code == 422 and "not a PostgreSQL log line" in answer.text, answer.text
    assert took < BOUND_S, f"{took:.1f}s"


@pytest.mark.parametrize(
    ("pattern", "construct"),
    [
        (r"(\w+)\1", "backreference"),
        (r"(?=LOG)", "lookahead"),
        (r"(?!x)", "negative lookahead"),
        (r"(?<=x)", "lookbehind"),
        (r"(?P<u>a)(?P=u)", "named backreference"),
        (r"a++", "possessive quantifier"),
        (r"(", "missing )"),
    ],
)
def test_unsupported_prefix_regex_is_a_400_naming_the_parameter(
    server: Server, token: str, pattern: str, construct: str
) -> None:
    size = _log_size(server)
    with server.client(token) as http:
        by_header = http.post("/v1/ingest/pgaudit", content=LINE.encode(), headers={
            "Content-Type": "text/plain", "X-Pgaudit-Prefix-Regex": pattern})
    for answer in (_ingest_pgaudit(server, token, LINE.encode(), prefix_regex=pattern), by_header):
        assert answer.status_code == 400, answer.text
        assert answer.headers["content-type"].startswith("application/problem+json")
        problem = answer.json()
        assert problem["parameter"] == "prefix_regex"
        assert "prefix_regex" in problem["detail"] and construct in problem["detail"], problem
    assert _log_size(server) == size  # nothing of a refused request is stored


# --- requests: decoding stays linear and bounded ----------------------------------------


def test_decoding_stops_at_the_record_limit(tmp_path: Path) -> None:
    server = Server(tmp_path / "data", "--max-events-per-request", "100").start()
    try:
        token = server.token("source", service="pg-flood")
        body = b"x\n" * 500_000  # a million bytes of one-byte records that would all be errors
        answer, took = _timed(lambda: _ingest_pgaudit(server, token, body))
        assert answer.status_code == 413, answer.text
        assert "limit is 100" in answer.json()["detail"]
        assert took < BOUND_S, f"{took:.1f}s"
        good = _ingest_pgaudit(server, token, LINE.encode() * 100)
        assert good.status_code == 200 and good.json()["accepted"] == 1  # the same line: duplicates
    finally:
        server.stop()


def test_decoder_limit_applies_to_every_format() -> None:
    with pytest.raises(PayloadTooLarge, match="limit is 10"):
        decode("cloudtrail", orjson.dumps({"Records": [1] * 11}), "application/json", {}, max_records=10)
    assert len(decode("cloudtrail", orjson.dumps({"Records": [1] * 10}), "application/json", {},
                      max_records=10).items) == 10
    # bodies that are not one JSON text are split record by record: the limit holds there too
    for broken in (b"[" + b"1," * 500_000 + b"{", b"{}\n" + b"x\n" * 500_000):
        start = time.monotonic()
        with pytest.raises(PayloadTooLarge):
            decode("cloudtrail", broken, "application/json", {}, max_records=10)
        assert time.monotonic() - start < BOUND_S


def test_unclosed_quote_continuation_is_linear() -> None:
    # an AUDIT statement whose quote never closes swallows every following line; the
    # quote parity used to be recomputed over the whole entry for each line (quadratic)
    head = '2026-11-27 10:00:01.000 UTC [1] a@d LOG:  AUDIT: SESSION,1,1,READ,SELECT,,,"SELECT\n'
    body = (head + "y" * 20 + "\n" * 1 + ("z" * 20 + "\n") * 60_000).encode()
    decoded, took = _timed(lambda: decode("pgaudit", body, "text/plain", {}))
    assert len(decoded.items) == 1  # one entry, one error: its CSV never closes
    assert took < BOUND_S, f"{took:.1f}s"


# --- Sigma rules ------------------------------------------------------------------------


def auditfed_rule(detection: str, *, title: str) -> str:
    return (f"title: {title}\nid: 11111111-1111-4111-8111-111111111111\nstatus: test\n"
            f"logsource:\n    product: auditfed\ndetection:\n{detection}")


def event(actor: dict[str, str]) -> dict[str, Any]:
    return {"action": "test.action", "outcome": "success", "actor": actor,
            "source": {"service": "svc", "kind": "app"}, "time": "2026-01-01T00:00:00Z"}


def _engine(detection: str) -> DetectionEngine:
    ruleset = load_rules(texts=[("hostile.yml", auditfed_rule(detection, title="Hostile pattern"))])
    assert not ruleset.errors, [str(e) for e in ruleset.errors]
    return DetectionEngine(ruleset)


@pytest.mark.parametrize(
    ("detection", "good"),
    [
        ("    selection:\n        actor.id|re: '^(a+)+$'\n    condition: selection\n", "a" * 30),
        ("    selection:\n        actor.id|re: '(a|a)*b'\n    condition: selection\n", "a" * 30 + "b"),
        ("    selection:\n        actor.id|re|i: '^(A+)+$'\n    condition: selection\n", "aA" * 15),
        # wildcards become regexes too: k stars backtrack as n^k on Python's re
        ("    selection:\n        actor.id: '*a*a*a*a*a*a*b'\n    condition: selection\n", "a" * 30 + "b"),
        ("    keywords:\n        - '*a*a*a*a*a*a*b'\n    condition: keywords\n", "a" * 30 + "b"),
    ],
)
def test_sigma_catastrophic_patterns_complete_and_still_match(detection: str, good: str) -> None:
    engine = _engine(detection)
    hostile = event(actor={"id": "a" * 200_000 + "!"})
    matched, took = _timed(lambda: engine.matching_rules(hostile))
    assert matched == [] and took < BOUND_S, f"{took:.1f}s"
    assert engine.matching_rules(event(actor={"id": good}))


@settings(max_examples=400, derandomize=True, deadline=None)
@given(
    pattern=st.lists(st.sampled_from(["*", "?", "a", "b", "ab", "A", "é", "."]), max_size=7),
    value=st.text(alphabet="abAB.é\n", max_size=12),
    cased=st.booleans(),
)
def test_wildcards_mean_what_a_regex_would(pattern: list[str], value: str, cased: bool) -> None:
    """The linear glob matcher agrees with the anchored regex Sigma wildcards stand for."""
    parts = [_WILD if p == "*" else _ONE if p == "?" else p for p in pattern]
    regex = "".join(".*" if p == "*" else "." if p == "?" else re.escape(p) for p in pattern)
    flags = re.DOTALL | (0 if cased else re.IGNORECASE)
    assert _glob(parts, cased)(value) is (re.fullmatch(regex, value, flags) is not None)


@pytest.mark.parametrize("pattern", [r"(\w)\1", "(?<=x)y", "(?!x)y", r"a\Z"])
def test_sigma_regex_engine_cannot_run_is_a_rule_load_error(pattern: str) -> None:
    rule = auditfed_rule(f"    selection:\n        action|re: '{pattern}'\n    condition: selection\n",
                         title="Backtracking rule")
    ruleset = load_rules(texts=[("bad.yml", rule)])
    assert len(ruleset.errors) == 1 and not ruleset.detections
    message = str(ruleset.errors[0])
    assert "Backtracking rule" in message and "bad.yml" in message, message


# --- configuration ----------------------------------------------------------------------


def test_redaction_regex_path_is_linear_and_refuses_lookaround() -> None:
    redactor = Redactor([Rule("$..~(a|a)*", action="mask")], salt=b"s" * 32)
    hostile = {"attributes": {"a" * 5_000 + "!": "kept", "aaaa": "secret"}}
    out, took = _timed(lambda: redactor.apply(hostile))
    assert out["attributes"]["aaaa"] == "[redacted]" and out["attributes"]["a" * 5_000 + "!"] == "kept"
    assert took < BOUND_S, f"{took:.1f}s"
    with pytest.raises(ConfigError, match="lookahead"):
        Rule("$..[~'(?=x)y']")


def test_directory_patterns_are_linear_and_refuse_backreferences() -> None:
    rule = DirectoryRule(system="aws", pattern="**-**-**-**-**-{name:(a|a)*}x", principal="{name}@corp.example")
    directory = Directory(rules=[rule])
    hostile = "-" * 3_000 + "a" * 40 + "!"
    resolved, took = _timed(lambda: directory.resolve("aws", hostile))
    assert resolved is None and took < BOUND_S, f"{took:.1f}s"
    assert directory.resolve("aws", "r-1-2-3-4-aax") == "aa@corp.example"
    patterns, took = _timed(lambda: directory.alias_patterns("a" * 3_000 + "@corp.example!"))
    assert patterns == [] and took < BOUND_S
    with pytest.raises(ConfigError, match="backreference"):
        Directory(rules=[DirectoryRule(system="aws", pattern=r"{name:(a)\1}", principal="{name}")])


# --- the module itself ------------------------------------------------------------------


def test_flags_mean_what_python_and_sigma_mean() -> None:
    assert compile_regex("^b", multiline=True).search("a\nb")
    assert not compile_regex("^b").search("a\nb")
    assert compile_regex("a.b", dot_all=True).search("a\nb")
    assert not compile_regex("a.b").search("a\nb")
    assert compile_regex("ÉTÉ", ignore_case=True).search("été")
    assert compile_regex(r"(?P<user>\w+)@").match("alice@db").groupdict() == {"user": "alice"}
    with pytest.raises(RegexRefused) as refused:
        compile_regex("(?<!a)b")
    assert refused.value.status == 400 and "negative lookbehind" in refused.value.detail
