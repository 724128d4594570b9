"""Property-based fuzz of every decoder (issue #16 item 9: hostile bytes never crash a parser).

Each decoder gets structured-but-hostile input from Hypothesis: real records of its
format with values swapped for wrong types, huge integers, deep-ish nesting, non-ASCII,
lone surrogates and NUL; raw bytes; and broken signed notes, bundles and batches. The
only exceptions allowed to escape are auditfed's own (:class:`AuditfedError`, which the
API turns into a 4xx problem): never ``KeyError``, ``TypeError``, ``RecursionError``,
``OverflowError``, ``UnicodeError``...

Budget: ``AUDITFED_FUZZ_EXAMPLES`` examples per property (default 60, the whole
module in well under a minute on two cores), derandomized unless
``AUDITFED_FUZZ_RANDOM=1``; raise both for a deep local run.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from auditfed.errors import AuditfedError
from auditfed.event.model import format_time
from auditfed.federation.protocol import decode_batch, parse_batch, verify_signed
from auditfed.identity.tokens import Caller
from auditfed.ingest.body import inflate, parse_json_items
from auditfed.ingest.pipeline import EVENTS, IngestRequest, prepare_request
from auditfed.ledger import Signer
from auditfed.ledger.checkpoint import Checkpoint, sign_checkpoint, verify_checkpoint
from auditfed.ledger.cosignature import CosignatureVerifier, Cosigner, cosign, verify_cosignature
from auditfed.ledger.note import Verifier, append_signatures, open_note, split_note
from auditfed.query import evidence
from auditfed.query.language import parse_query
from auditfed.query.reading import parse_checked, parse_time_bound
from auditfed.sources import DECODERS

DATA = Path(__file__).resolve().parent.parent / "data"
EXAMPLES = int(os.environ.get("AUDITFED_FUZZ_EXAMPLES", "60"))
FUZZ = settings(max_examples=EXAMPLES, derandomize=os.environ.get("AUDITFED_FUZZ_RANDOM", "") != "1",
                deadline=None, database=None, suppress_health_check=list(HealthCheck))
SOURCE = Caller("fuzz", "source", service="fuzz-svc", environment="fuzz")
ADMIN = Caller("fuzz", "admin")
LIMIT = 1 << 20

# --- what is allowed to escape ---------------------------------------------------------

def only_our_errors(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call ``function``; only auditfed's own errors may escape, and only as 4xx."""
    try:
        return function(*args, **kwargs)
    except AuditfedError as exc:
        assert 400 <= exc.status < 500, f"{type(exc).__name__} would be a {exc.status}: {exc.detail}"
        return None


# --- hostile values ----------------------------------------------------------------------

HOSTILE_TEXT = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["", "\x00", "\ud800", "\udfff", "a\x00b", "é" * 50, "🔥", "\u202e", "null", "-1",
                     "9" * 40, "1e999", "NaN", "2026-13-45T25:61:61Z", "0000-00-00", "now-999999h",
                     "../../etc/passwd", "%s%n", "x" * 5000]),
)
HOSTILE_SCALAR = st.one_of(
    st.none(), st.booleans(), HOSTILE_TEXT,
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.sampled_from([2**53 + 1, -(2**63), 2**63 - 1, 0, -1]),
    st.floats(allow_nan=False, allow_infinity=False),
)
HOSTILE = st.recursive(
    HOSTILE_SCALAR,
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(HOSTILE_TEXT, children, max_size=4)),
    max_leaves=12,
)


def _deeply_nested(depth: int) -> Any:
    value: Any = "x"
    for i in range(depth):
        value = [value] if i % 2 else {"k": value}
    return value


#: Nesting below the JSON parser's own limit (orjson: 1024): what our code must survive.
DEEP = st.integers(min_value=40, max_value=200).map(_deeply_nested)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(value, dict):
        for key, child in value.items():
            found += _paths(child, (*prefix, key))
    elif isinstance(value, list):
        for i, child in enumerate(value):
            found += _paths(child, (*prefix, i))
    return found


def _replace(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(value, dict):
        return {**value, head: _replace(value[head], rest, new)}
    return [_replace(v, rest, new) if i == head else v for i, v in enumerate(value)]


@st.composite
def mutated(draw: st.DrawFn, seeds: list[Any]) -> Any:
    """A real record with one to three of its values (or subtrees) made hostile."""
    value = draw(st.sampled_from(seeds))
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        path = draw(st.sampled_from(_paths(value)))
        value = _replace(value, path, draw(st.one_of(HOSTILE, DEEP)))
    return value


def to_json(value: Any) -> bytes:
    """JSON text of anything Python's encoder takes (lone surrogates become \\ud800 escapes)."""
    return json.dumps(value).encode()


# --- real records of each format, to mutate --------------------------------------------------

NOW = "2026-11-27T10:00:00Z"
K8S = [orjson.loads(p.read_bytes()) for p in sorted((DATA / "k8s-audit").glob("*.json"))]
CLOUDTRAIL = [orjson.loads(p.read_bytes())
              for p in sorted((DATA / "cloudtrail" / "stratus-red-team").glob("*.json"))[:4]]
GITHUB = [{"@timestamp": 1716203287012, "_document_id": "Xr0vyvg2", "action": "repo.destroy", "actor": "octocat",
           "actor_id": 583231, "actor_ip": "192.0.2.10", "actor_location": {"country_code": "US"},
           "created_at": 1716203287012, "org": "octo-org", "repo": "octo-org/octo-repo", "user": "hubot",
           "operation_type": "remove", "hashed_token": "k7e0Y1vV5r1a2ZOq2W8e/Jh3rS1Tq5Sx1uG5kO+8rOo="}]
OKTA = [{"uuid": "dc9fd3c0-598c-11ef-8478-2b7584bf8d5a", "published": "2024-08-13T15:58:20.353Z",
         "eventType": "user.session.start", "version": "0", "severity": "INFO", "displayMessage": "login",
         "actor": {"id": "00u1", "type": "User", "alternateId": "alice@corp.example", "displayName": "Alice"},
         "client": {"userAgent": {"rawUserAgent": "Mozilla/5.0"}, "ipAddress": "203.0.113.7",
                    "geographicalContext": {"city": "Toronto"}},
         "outcome": {"result": "SUCCESS", "reason": None},
         "target": [{"id": "00u1", "type": "User", "alternateId": "alice@corp.example"}],
         "transaction": {"type": "WEB", "id": "ZrsH3B9"}, "authenticationContext": {"externalSessionId": "102b"},
         "debugContext": {"debugData": {"requestUri": "/api/v1/authn"}},
         "request": {"ipChain": [{"ip": "203.0.113.7"}]}}]
CLOUDEVENTS = [{"specversion": "1.0", "id": "A234", "source": "https://github.com/cloudevents/spec/pull",
                "type": "com.github.pull_request.opened", "subject": "123", "time": "2018-04-05T17:31:00Z",
                "datacontenttype": "application/json", "authtype": "app_user", "authid": "alice",
                "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                "data": {"action": "opened", "number": 123}}]
PGAUDIT_JSONLOG = [{"timestamp": "2026-11-27 10:00:00.000 UTC", "user": "alice", "dbname": "app", "pid": 42,
                    "error_severity": "LOG", "remote_host": "10.0.0.1", "session_id": "6750a1.2a",
                    "message": "AUDIT: SESSION,1,1,READ,SELECT,TABLE,public.t,select 1,<not logged>"}]
OTLP_SERVICE = {"key": "service.name", "value": {"stringValue": "billing"}}
OTLP_JSON = [{"resourceLogs": [{"resource": {"attributes": [OTLP_SERVICE]},
                                "scopeLogs": [{"scope": {"name": "audit"}, "logRecords": [{
                                    "timeUnixNano": "1732701600000000000", "severityText": "INFO",
                                    "traceId": "4bf92f3577b34da6a3ce929d0e0e4736", "spanId": "00f067aa0ba902b7",
                                    "body": {"stringValue": "invoice read"},
                                    "attributes": [{"key": "audit.action", "value": {"stringValue": "invoice.read"}},
                                                   {"key": "enduser.id", "value": {"stringValue": "alice"}},
                                                   {"key": "n", "value": {"intValue": "7"}}]}]}]}]}]
EVENT = [{"time": NOW, "action": "db.query", "outcome": "success", "actor": {"id": "alice", "type": "user"},
          "resource": {"type": "table", "id": "t"}, "source": {"service": "fuzz-svc", "environment": "fuzz"},
          "trace": {"trace_id": "4bf92f3577b34da6a3ce929d0e0e4736", "span_id": "00f067aa0ba902b7"},
          "attributes": {"rows": 3, "tags": ["a", "b"]}, "reason": "CHG-1"}]
JSON_SEEDS = {"k8s-audit": K8S, "cloudtrail": CLOUDTRAIL, "github-audit": GITHUB, "okta": OKTA,
              "cloudevents": CLOUDEVENTS, "pgaudit": PGAUDIT_JSONLOG, "otlp": OTLP_JSON, EVENTS: EVENT}
assert set(JSON_SEEDS) == {*DECODERS, EVENTS}, "a new decoder needs seeds here"
CONTENT_TYPES = [None, "application/json", "application/x-ndjson", "application/x-protobuf", "text/plain",
                 "application/cloudevents+json", "application/cloudevents-batch+json", "application/json; charset=x",
                 "application/gzip", "\x00/\x00", ""]


def _ingest(format: str, body: bytes, content_type: str | None, caller: Caller = SOURCE,
            headers: dict[str, str] | None = None, encoding: str | None = None) -> None:
    """The whole pure ingest chain of a route: inflate, decode, validate, enrich, canonicalise."""
    request = IngestRequest(format=format, body=body, caller=caller, observed=format_time(datetime.now(UTC)),
                            max_body_bytes=LIMIT, max_events=1000, content_type=content_type,
                            content_encoding=encoding, headers=headers or {},
                            options={"service": "fuzz-svc"} if format == "otlp" else {})
    prepare_request(request, ())


def _body(value: Any, ndjson: bool) -> bytes:
    if ndjson and isinstance(value, list):
        return b"\n".join(to_json(v) for v in value)
    return to_json(value)


# --- sources and the events route ----------------------------------------------------------------


@pytest.mark.parametrize("format", sorted(JSON_SEEDS))
def test_source_decoders_survive_hostile_records(format: str) -> None:
    @FUZZ
    @given(record=mutated(JSON_SEEDS[format]), wrap=st.sampled_from(["one", "array", "ndjson"]),
           content_type=st.sampled_from(CONTENT_TYPES), caller=st.sampled_from([SOURCE, ADMIN]))
    def check(record: Any, wrap: str, content_type: str | None, caller: Caller) -> None:
        value = record if wrap == "one" else [record, JSON_SEEDS[format][0]]
        body = _body(value, wrap == "ndjson")
        if format == "pgaudit" and content_type == "text/plain":
            body = b"2026-11-27 10:00:00.000 UTC [42] " + body  # a stderr line whose message is hostile
        only_our_errors(_ingest, format, body, content_type, caller)

    check()


@pytest.mark.parametrize("format", sorted(JSON_SEEDS))
def test_source_decoders_survive_raw_bytes(format: str) -> None:
    @FUZZ
    @given(body=st.one_of(st.binary(max_size=300), HOSTILE.map(to_json)),
           content_type=st.sampled_from(CONTENT_TYPES),
           headers=st.dictionaries(st.sampled_from(["ce-specversion", "ce-id", "ce-source", "ce-type", "ce-time",
                                                     "x-pgaudit-log-line-prefix", "x-pgaudit-skip-non-audit"]),
                                   st.text(max_size=20), max_size=4))
    def check(body: bytes, content_type: str | None, headers: dict[str, str]) -> None:
        only_our_errors(_ingest, format, body, content_type, SOURCE, headers)

    check()


@FUZZ
@given(body=st.binary(max_size=400), gzipped=st.booleans(), encoding=st.sampled_from([None, "gzip", "br", "GZIP "]))
def test_body_inflate_and_json_items_survive_anything(body: bytes, gzipped: bool, encoding: str | None) -> None:
    data = gzip.compress(body) if gzipped else body
    inflated = only_our_errors(inflate, data, encoding, 1000)
    if inflated is not None:
        for content_type in ("application/json", "application/x-ndjson", "text/csv"):
            only_our_errors(parse_json_items, inflated, content_type)


def _otlp_protobuf() -> bytes:
    from google.protobuf.json_format import ParseDict
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

    request = orjson.loads(orjson.dumps(OTLP_JSON[0]))
    record = request["resourceLogs"][0]["scopeLogs"][0]["logRecords"][0]
    for key in ("traceId", "spanId"):  # the protobuf JSON mapping wants base64, OTLP/JSON hex
        record[key] = base64.b64encode(bytes.fromhex(record[key])).decode()
    return ParseDict(request, ExportLogsServiceRequest()).SerializeToString()


OTLP_PROTOBUF = _otlp_protobuf()


@st.composite
def corrupted(draw: st.DrawFn, data: bytes) -> bytes:
    """``data`` with a few bytes overwritten, inserted or cut (lengths and tags go wrong)."""
    out = bytearray(data)
    for _ in range(draw(st.integers(min_value=1, max_value=6))):
        at = draw(st.integers(min_value=0, max_value=max(len(out) - 1, 0)))
        piece = draw(st.binary(min_size=1, max_size=4))
        action = draw(st.sampled_from(["overwrite", "insert", "cut"]))
        if action == "overwrite":
            out[at:at + len(piece)] = piece
        elif action == "insert":
            out[at:at] = piece
        else:
            del out[at:at + len(piece)]
    return bytes(out)


@FUZZ
@given(body=st.one_of(st.binary(min_size=1, max_size=400), corrupted(OTLP_PROTOBUF)))
def test_otlp_protobuf_survives_corrupt_messages(body: bytes) -> None:
    only_our_errors(_ingest, "otlp", body, "application/x-protobuf")


PGAUDIT_FIELDS = ["AUDIT: SESSION", "1", "1", "READ", "SELECT", "TABLE", "public.t", '"select 1, 2"', "<not logged>"]


@st.composite
def pgaudit_lines(draw: st.DrawFn) -> bytes:
    """stderr log lines (Debian's prefix) whose pgaudit CSV fields are hostile, with continuations."""
    fields = [draw(st.one_of(st.just(f), HOSTILE_TEXT)) for f in PGAUDIT_FIELDS]
    kept = draw(st.integers(min_value=0, max_value=len(fields)))
    fields = fields[:kept] + draw(st.lists(HOSTILE_TEXT, max_size=2))
    prefix = draw(st.sampled_from(["2026-11-27 10:00:00.123 UTC [42] alice@app ", "2026-11-27 10:00:00 UTC [x] ",
                                   "", "\t", "2026-11-27 10:00:00.123 UTC [42] @ "]))
    severity = draw(st.sampled_from(["LOG:  ", "ERROR:  ", "STATEMENT:  ", ""]))
    line = prefix + severity + ",".join(fields)
    continuation = draw(st.lists(st.sampled_from(["\tmore", "\t", "\x00", "\ud800"]), max_size=2))
    return "\n".join([line, *continuation]).encode(errors="surrogatepass")


@FUZZ
@given(body=pgaudit_lines(), prefix=st.sampled_from([None, "%m [%p] %q%u@%d ", "%t %r %a %%", "%", "%Q %z "]))
def test_pgaudit_text_survives_hostile_lines(body: bytes, prefix: str | None) -> None:
    headers = {} if prefix is None else {"x-pgaudit-log-line-prefix": prefix}
    only_our_errors(_ingest, "pgaudit", body, "text/plain", SOURCE, headers)


# --- the query language ----------------------------------------------------------------------------

QUERY_WORDS = st.sampled_from([
    "actor:", "action:", "service:", "resource:", "outcome:", "time>=", "time<", "time>", "time<=", "id:",
    "environment:", "trace:", "AND", "OR", "NOT", "(", ")", '"', "*", "\\", ":", "now", "now-1h", "now-99d",
    "now-999999d", "2026-11-01", "2026-11-01T00:00:00Z", "alice", "db.*",
    "\x00", "\ud800", "é", " ", "-", "=", ">", "<",
])


@FUZZ
@given(text=st.one_of(st.lists(QUERY_WORDS, max_size=30).map("".join), st.lists(QUERY_WORDS, max_size=30).map(" ".join),
                      st.text(max_size=200)))
@example(text="time>=now-999999d")  # issue #16's named case (was an OverflowError)
@example(text="(" * 2000)
@example(text="NOT " * 1000 + "actor:a")
def test_query_language_survives_hostile_text(text: str) -> None:
    only_our_errors(parse_query, text)
    only_our_errors(parse_checked, text)
    only_our_errors(parse_time_bound, text, text)


# --- signed notes, checkpoints, cosignatures ------------------------------------------------------

SIGNER = Signer.generate("fuzz.example/log")
VERIFIER = Verifier.from_key(SIGNER.verifier_key())
NOTE = sign_checkpoint(Checkpoint("fuzz.example/log", 7, b"\x01" * 32), SIGNER)
COSIGNER = Cosigner.generate("fuzz.example/witness")
COSIGNED = append_signatures(NOTE, [cosign(NOTE, COSIGNER, 1_700_000_000)])


@st.composite
def broken_text(draw: st.DrawFn, text: str) -> str:
    """``text`` with a few characters replaced, inserted or removed."""
    chars = list(text)
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        at = draw(st.integers(min_value=0, max_value=len(chars)))
        action = draw(st.sampled_from(["replace", "insert", "delete"]))
        piece = draw(st.sampled_from(["\n", " ", "\x00", "\ud800", "—", "+", "=", "A", "0", "9" * 30, "\u2014 "]))
        if action == "insert" or at == len(chars):
            chars[at:at] = list(piece)
        elif action == "replace":
            chars[at] = piece
        else:
            del chars[at]
    return "".join(chars)


@FUZZ
@given(note=st.one_of(broken_text(COSIGNED), st.text(max_size=200)), as_bytes=st.booleans())
def test_notes_and_checkpoints_survive_hostile_text(note: str, as_bytes: bool) -> None:
    raw: str | bytes = note.encode(errors="surrogatepass") if as_bytes else note
    only_our_errors(split_note, raw)
    only_our_errors(open_note, raw, [VERIFIER])
    only_our_errors(verify_checkpoint, raw, VERIFIER)
    only_our_errors(Checkpoint.parse, note)
    only_our_errors(verify_cosignature, raw, CosignatureVerifier.from_key(COSIGNER.verifier_key()))
    only_our_errors(cosign, note, COSIGNER, 1)


# --- federation batches -------------------------------------------------------------------------

BATCH = {"start": 0, "leaves": ["a", {"base64": "AAE="}], "checkpoint": NOTE,
         "proof": [base64.b64encode(b"\x02" * 32).decode()], "prior": []}


@FUZZ
@given(body=st.one_of(mutated([BATCH]), HOSTILE), raw=st.binary(max_size=100))
def test_federation_batches_survive_hostile_bodies(body: Any, raw: bytes) -> None:
    batch = only_our_errors(decode_batch, body)
    if batch is not None:
        only_our_errors(verify_signed, batch, VERIFIER)
    only_our_errors(parse_batch, to_json(body))
    only_our_errors(parse_batch, raw)


# --- evidence bundles ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[bytes], str]:
    """A real bundle of three events, and the key that verifies it."""
    from auditfed.ingest.prepare import prepare_event
    from auditfed.ingest.sequencer import Sequencer
    from auditfed.store.sqlite import SQLiteStore

    store = SQLiteStore(tmp_path_factory.mktemp("bundle") / "log.db", fsync=False)
    sequencer = Sequencer(store, SIGNER)
    sequencer.start()
    try:
        sequencer.append_sync([prepare_event(dict(EVENT[0]), i, ADMIN, NOW) for i in range(3)])
        sequencer.checkpoint_now()
        sequencer.wait_indexed(5)
        lines = list(evidence.iter_bundle(store, None, query="", verifier_key=SIGNER.verifier_key(),
                                          checkpoint=store.latest_checkpoint(), consistency_from=[1]))
    finally:
        sequencer.stop()
        store.close()
    report = evidence.verify(lines, SIGNER.verifier_key())
    assert report.ok, report.as_dict()
    return b"".join(lines).splitlines(keepends=True), SIGNER.verifier_key()


def test_evidence_verify_reports_hostile_bundles(bundle: tuple[list[bytes], str]) -> None:
    lines, key = bundle
    documents = [orjson.loads(line) for line in lines]

    @FUZZ
    @given(at=st.integers(min_value=0, max_value=len(lines) - 1), data=st.data(),
           how=st.sampled_from(["mutate", "raw", "drop", "duplicate"]))
    def check(at: int, data: st.DataObject, how: str) -> None:
        changed = list(lines)
        if how == "mutate":
            changed[at] = to_json(data.draw(mutated([documents[at]]))) + b"\n"
        elif how == "raw":
            changed[at] = data.draw(st.binary(max_size=200))
        elif how == "drop":
            del changed[at]
        else:
            changed.insert(at, changed[at])
        only_our_errors(evidence.verify, changed, key)

    check()


# --- the crashes the fuzz found, one regression test each --------------------------------------------


def test_k8s_stage_subresource_and_uri_of_any_type_are_judged_per_record() -> None:
    record = {**K8S[0], "auditID": "hostile-1", "stage": ["ResponseComplete"], "requestURI": 7,
              "objectRef": {"subresource": ["log"]}}
    decoded = DECODERS["k8s-audit"](to_json([record, K8S[0]]), "application/json", {}, None)
    assert decoded.positions == [0, 1]  # the hostile record is an event or a record error, the other one unharmed


def test_federation_batch_hashes_must_be_strings() -> None:
    with pytest.raises(AuditfedError, match="base64 hashes"):
        decode_batch({**BATCH, "prior": [{"base64": "AAE="}]})


def test_note_with_a_lone_surrogate_is_a_signature_error() -> None:
    from auditfed.errors import SignatureError

    with pytest.raises(SignatureError, match="not UTF-8"):
        open_note(NOTE.replace("fuzz", "f\ud800z", 1), [VERIFIER])
