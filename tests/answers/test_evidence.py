"""Evidence bundles: exported, verified offline, and every tampered byte caught and named."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import orjson
import pytest

from auditfed.ledger import Signer, consistency_proof, inclusion_proof, sign_checkpoint
from auditfed.ledger.checkpoint import Checkpoint
from auditfed.query import evidence
from auditfed.query.language import parse_query

from .helpers import event, open_log


@pytest.fixture(scope="module")
def log(tmp_path_factory: pytest.TempPathFactory):
    with open_log(tmp_path_factory.mktemp("evidence")) as log:
        events = [event("db.query", f"user{i % 5}", resource={"id": f"t{i % 4}"}) for i in range(700)]
        log.append(events[:500])  # two signed checkpoints: 500 and 700
        log.append(events[500:])
        yield log


def bundle(log, query: str, **kw) -> bytes:
    out = io.BytesIO()
    evidence.export(log.store, parse_query(query), out, query=query, verifier_key=log.verifier_key, **kw)
    return out.getvalue()


def test_proofs_from_the_cache_equal_the_ledgers(log) -> None:
    size = log.store.latest_checkpoint().size
    source = evidence.ProofSource(log.store, size, max_tiles=2)
    for index in (0, 1, 2, 255, 256, 257, 511, 512, 600, size - 1):
        assert source.inclusion(index) == inclusion_proof(index, size, log.store)


def test_entries_are_c2sp_tlog_proofs(log) -> None:
    lines = bundle(log, "resource:t1 actor:user1").splitlines()
    header = orjson.loads(lines[0])
    entry = orjson.loads(lines[1])
    index, hashes, note, extra = evidence.parse_tlog_proof(entry["proof"])
    assert index == entry["index"] and note == header["checkpoint"] and extra is None
    assert entry["proof"].startswith(f"c2sp.org/tlog-proof@v1\nindex {index}\n")
    assert hashes == inclusion_proof(index, header["tree_size"], log.store)
    assert orjson.loads(lines[-1]) == {"type": "end", "entries": len(lines) - 2}


def test_export_and_offline_verification(log, tmp_path: Path) -> None:
    path = tmp_path / "b.afev.jsonl"
    seen: list[tuple[int, int | None]] = []
    summary = evidence.export(log.store, parse_query("resource:t2"), path, query="resource:t2",
                              verifier_key=log.verifier_key, progress=lambda d, t: seen.append((d, t)))
    assert summary.entries == 175 and summary.tree_size == 700 and seen[-1] == (175, 175)
    report = evidence.verify(path, log.verifier_key)
    assert report.ok and report.verified == 175 and report.query == "resource:t2" and report.tree_size == 700
    assert evidence.verify(path, log.verifier_key, shortcut=False).ok
    empty = bundle(log, "resource:nothing")
    assert evidence.verify(io.BytesIO(empty), log.verifier_key).ok


def test_events_after_the_checkpoint_are_left_out(log) -> None:
    old = log.store.checkpoint_at_least(1)
    out = io.BytesIO()
    summary = evidence.export(log.store, None, out, query="", verifier_key=log.verifier_key, checkpoint=old)
    assert old.size == 500
    assert summary.entries == old.size and summary.excluded_beyond_checkpoint == 700 - old.size


def flipped(data: bytes, position: int) -> bytes:
    return data[:position] + bytes([data[position] ^ 0x01]) + data[position + 1:]


def test_every_byte_of_events_proofs_and_checkpoint_is_protected(log) -> None:
    data = bundle(log, "resource:t3 actor:user3")  # 35 events: use the first 2 for speed
    lines = data.split(b"\n")
    lines = [lines[0], *lines[1:3], orjson.dumps({"type": "end", "entries": 2})]
    data = b"\n".join(lines) + b"\n"
    assert evidence.verify(io.BytesIO(data), log.verifier_key).ok
    header = orjson.loads(lines[0])
    # the query and export time are the exporter's statement, not signed: skip their bytes
    free = set()
    for name in ("query", "exported_at"):
        value = orjson.dumps(header[name])
        start = lines[0].index(b'"' + name.encode() + b'":' + value) + len(name) + 3
        free.update(range(start + 1, start + len(value) - 1))
    starts = [0]
    for line in lines:
        starts.append(starts[-1] + len(line) + 1)
    checked = 0
    for position in range(len(data)):
        if position in free:
            continue
        report = evidence.verify(io.BytesIO(flipped(data, position)), log.verifier_key)
        line_no = next(i for i in range(len(lines) + 1) if starts[i + 1] > position)
        assert not report.ok, f"byte {position} (line {line_no + 1}) changed unnoticed"
        parts = {p.part for p in report.problems}
        if line_no == 0:
            assert parts & {"header", "key", "checkpoint", "consistency", "entry"}, (position, report.problems)
        elif line_no in (1, 2):
            named = [p for p in report.problems if p.part == "entry" and p.entry == line_no]
            assert named or "trailer" in parts, (position, report.problems)
        else:
            assert parts & {"trailer", "entry"}, (position, report.problems)
        checked += 1
    assert checked > 2000


def _entry_line(data: bytes, n: int) -> tuple[list[bytes], dict]:
    lines = data.split(b"\n")
    return lines, orjson.loads(lines[n])


def _with(lines: list[bytes], n: int, entry: dict) -> io.BytesIO:
    lines = list(lines)
    lines[n] = orjson.dumps(entry)
    return io.BytesIO(b"\n".join(lines))


def test_tampering_is_named_by_part(log) -> None:
    data = bundle(log, "resource:t0 actor:user0")
    lines, entry = _entry_line(data, 3)
    # the event's bytes (re-encoded cleanly, so only the content differs)
    event_bytes = bytearray(base64.b64decode(entry["data"]))
    event_bytes[5] ^= 0x04
    report = evidence.verify(_with(lines, 3, {**entry, "data": base64.b64encode(bytes(event_bytes)).decode()}),
                             log.verifier_key)
    assert [(p.part, p.entry, p.field) for p in report.problems] == [("entry", 3, "data")]
    assert f"entry 3 (log index {entry['index']}) data" in report.problems[0].message()
    # the leaf hash alone
    leaf = bytearray(base64.b64decode(entry["leaf_hash"]))
    leaf[0] ^= 1
    report = evidence.verify(_with(lines, 3, {**entry, "leaf_hash": base64.b64encode(bytes(leaf)).decode()}),
                             log.verifier_key)
    assert [(p.entry, p.field) for p in report.problems] == [(3, "leaf_hash")]
    # one proof hash, cleanly re-encoded
    index, hashes, note, _ = evidence.parse_tlog_proof(entry["proof"])
    hashes[2] = bytes([hashes[2][0] ^ 1]) + hashes[2][1:]
    report = evidence.verify(_with(lines, 3, {**entry, "proof": evidence.tlog_proof(index, hashes, note)}),
                             log.verifier_key)
    assert [(p.entry, p.field) for p in report.problems] == [(3, "proof")]
    # a proof for another index
    report = evidence.verify(_with(lines, 3, {**entry, "index": entry["index"] + 1}), log.verifier_key)
    assert [(p.entry, p.field) for p in report.problems] == [(3, "proof")]
    # a missing entry (the count in the trailer no longer matches) and a cut-off file
    report = evidence.verify(io.BytesIO(b"\n".join(lines[:2] + lines[3:])), log.verifier_key)
    assert "entry" in {p.part for p in report.problems}  # numbering breaks
    report = evidence.verify(io.BytesIO(b"\n".join(lines[:-2])), log.verifier_key)
    assert [p.part for p in report.problems] == ["trailer"]


def test_checkpoint_and_key_tampering(log) -> None:
    data = bundle(log, "resource:t1 actor:user1")
    lines = data.split(b"\n")
    header = orjson.loads(lines[0])
    # a checkpoint re-signed by another key with the same name
    other = Signer.generate(log.signer.name)
    cp = Checkpoint.parse(header["checkpoint"].split("\n\n")[0] + "\n")
    forged = sign_checkpoint(cp, other)
    lines2 = [orjson.dumps({**header, "checkpoint": forged}), *lines[1:]]
    report = evidence.verify(io.BytesIO(b"\n".join(lines2)), log.verifier_key)
    parts = [p.part for p in report.problems]
    assert parts[0] == "checkpoint" and "entry" in parts  # entries carry the original checkpoint
    # a different root, re-signed by the forger, with the forger's key in the bundle
    report = evidence.verify(io.BytesIO(data), other.verifier_key())
    assert [p.part for p in report.problems][:2] == ["key", "checkpoint"]
    # the bundle's key replaced
    lines3 = [orjson.dumps({**header, "verifier_key": other.verifier_key()}), *lines[1:]]
    report = evidence.verify(io.BytesIO(b"\n".join(lines3)), log.verifier_key)
    assert [p.part for p in report.problems] == ["key"]
    assert not evidence.verify(io.BytesIO(data), "not a key").ok


def test_consistency_with_a_pinned_checkpoint(log, tmp_path: Path) -> None:
    older = log.store.checkpoint_at_least(1)
    latest = log.store.latest_checkpoint()
    assert older.size < latest.size
    data = bundle(log, "resource:t1", consistency_from=[older.size])
    header = orjson.loads(data.split(b"\n")[0])
    assert header["consistency"][0]["old_size"] == older.size
    report = evidence.verify(io.BytesIO(data), log.verifier_key, pinned_checkpoint=older.note)
    assert report.ok and report.consistency == [{"pinned_size": older.size, "bundle_size": latest.size,
                                                 "verified": True}]
    # a bundle against the older checkpoint, pinned to the newer one: the proof is supplied
    out = io.BytesIO()
    evidence.export(log.store, None, out, query="", verifier_key=log.verifier_key, checkpoint=older)
    needs = evidence.verify(io.BytesIO(out.getvalue()), log.verifier_key, pinned_checkpoint=latest.note)
    assert [p.part for p in needs.problems] == ["consistency"]
    proof = consistency_proof(older.size, latest.size, log.store)
    assert evidence.verify(io.BytesIO(out.getvalue()), log.verifier_key, pinned_checkpoint=latest.note,
                           consistency_hashes=proof).ok
    bad = [proof[0][:-1] + bytes([proof[0][-1] ^ 1]), *proof[1:]]
    report = evidence.verify(io.BytesIO(out.getvalue()), log.verifier_key, pinned_checkpoint=latest.note,
                             consistency_hashes=bad)
    assert [p.part for p in report.problems] == ["consistency"]
    # a pinned checkpoint from a forger
    forged = Signer.generate(log.signer.name).sign(Checkpoint.parse(latest.note.split("\n\n")[0] + "\n").body())
    report = evidence.verify(io.BytesIO(data), log.verifier_key, pinned_checkpoint=forged)
    assert [p.part for p in report.problems] == ["pinned"]


def test_report_is_json(log) -> None:
    report = evidence.verify(io.BytesIO(b"garbage\n"), log.verifier_key)
    assert not report.ok and report.problems[0].part == "header"
    json.dumps(report.as_dict())


def test_shared_upper_paths_are_still_checked_entry_by_entry(log) -> None:
    data = bundle(log, "resource:t2")  # 175 neighbouring entries: their upper paths are shared
    lines, entry = _entry_line(data, 100)
    index, hashes, note, _ = evidence.parse_tlog_proof(entry["proof"])
    hashes[-1] = bytes([hashes[-1][0] ^ 0x80]) + hashes[-1][1:]  # the top of the path
    tampered = _with(lines, 100, {**entry, "proof": evidence.tlog_proof(index, hashes, note)})
    for shortcut in (True, False):
        tampered.seek(0)
        report = evidence.verify(tampered, log.verifier_key, shortcut=shortcut)
        assert [(p.entry, p.field) for p in report.problems] == [(100, "proof")]
        assert report.verified == 174
