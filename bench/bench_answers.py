"""Answers over a big log (issue #5): traces, timelines, who-accessed, evidence bundles.

With 1,000,000 events stored, measures (goals in brackets):

- trace lookup p50 (<= 10 ms): ``get_trace`` of a random 4-hop trace;
- principal timeline of the last 1,000 events, aliases expanded (<= 50 ms);
- ``who_accessed`` on one resource (<= 50 ms);
- evidence export of 10,000 events spread over the whole log (<= 5 s);
- offline verification of that bundle against a bare loop hashing the same proofs
  (leaf hash + RFC 9162 path, data already decoded in memory), in the same run
  (>= 50 % of the bare loop's speed).

Baselines in the same run: the raw SQL lookup behind each query (no decoding, no
assembly) and the bare hashing loop.

The store is built in-process (rows, tiles and a signed checkpoint written straight
through the store's write transaction, as the sequencer writes them) and kept in
``--cache`` for the next run.

    python -m bench.bench_answers [--events 1000000] [--cache /tmp/auditfed-bench-answers]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import random
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from auditfed.identity.directory import Directory
from auditfed.ledger import Checkpoint, Signer, TreeAppender, sign_checkpoint
from auditfed.ledger.hashing import leaf_hash
from auditfed.query import evidence
from auditfed.query.compliance import who_accessed
from auditfed.query.evidence import parse_tlog_proof
from auditfed.query.language import parse_query
from auditfed.query.timeline import principal_timeline
from auditfed.query.traces import get_trace
from auditfed.store.base import CheckpointRecord, EntryRow
from auditfed.store.sqlite import SQLiteStore
from bench.common import emit, make_events, summary_ms

USERS = 500
RESOURCES = 200
BATCH = 50_000


def _events(start: int, count: int) -> list[dict[str, Any]]:
    """Shaped like real traffic: 4-hop traces across services; 500 principals; 200 tables."""
    events = make_events(count, seed=start + 1)
    rng = random.Random(start)
    services = ["web-gateway", "billing-api", "postgresql", "s3-export"]
    trace_id, spans = "", []
    for offset, event in enumerate(events):
        i = start + offset
        hop = i % 4
        if hop == 0:
            trace_id = f"{rng.getrandbits(128):032x}"
            spans = [f"{rng.getrandbits(64) | 1:016x}" for _ in range(4)]
        trace = {"trace_id": trace_id, "span_id": spans[hop]}
        if hop:
            trace["parent_span_id"] = spans[hop - 1]
        event["trace"] = trace
        event["source"] = {"service": services[hop], "environment": "prod-eu", "kind": "app"}
        user = event["actor"]["id"]
        event["actor"]["principal"] = f"{user}@corp.example"
        if hop == 0:
            event["policy"] = {"decision": "allow", "rule": "rbac/finance", "enforcer": "web-gateway"}
        event["observed_time"] = event["time"]
        if i % 11 == 0:
            event.pop("reason")
    return events


def build(path: Path, count: int, signer: Signer) -> SQLiteStore:
    store = SQLiteStore(path, fsync=False)
    if store.size() == count and store.latest_checkpoint() is not None:
        return store
    if store.size():
        raise SystemExit(f"{path} holds {store.size()} events, not {count}: remove it")
    tree = TreeAppender.empty()
    started = time.perf_counter()
    for first in range(0, count, BATCH):
        rows = []
        for event in _events(first, min(BATCH, count - first)):
            data = orjson.dumps(event, option=orjson.OPT_SORT_KEYS)  # JCS for these ASCII events
            rows.append(EntryRow(data, leaf_hash(data), event["source"]["service"], event["id"], event["time"],
                                 event["action"], event["actor"]["id"], event["actor"]["principal"],
                                 event["resource"]["id"], event["trace"]["trace_id"], "prod-eu", event["outcome"]))
        with store.transaction() as tx:
            tx.append_entries(first, rows)
            tree.extend(row.leaf_hash for row in rows)
            tx.put_tiles(tree.take_dirty_tiles())
        with store.index_transaction() as tx:
            tx.index_entries(first, rows)
        print(f"  built {first + len(rows):,} events ({time.perf_counter() - started:.0f} s)", file=sys.stderr)
    note = sign_checkpoint(Checkpoint(signer.name, tree.size, tree.root()), signer)
    with store.transaction(durable=True) as tx:
        tx.add_checkpoint(CheckpointRecord(tree.size, tree.root(), note, datetime.now(UTC).isoformat()))
    return store


def timed(fn: Any, runs: int) -> tuple[list[float], Any]:
    times, result = [], None
    for _ in range(runs):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return times, result


def raw(store: SQLiteStore, sql: str, *args: object) -> Any:
    return lambda: store._reader().execute(sql, args).fetchall()


def bare_loop(items: list[tuple[bytes, int, int, list[bytes]]], root: bytes) -> float:
    """The baseline: leaf hash + RFC 9162 inclusion path of each entry, nothing else."""
    sha = hashlib.sha256
    started = time.perf_counter()
    for data, index, size, hashes in items:
        r = sha(b"\x00" + data).digest()
        fn, sn = index, size - 1
        for p in hashes:
            if fn & 1 or fn == sn:
                r = sha(b"\x01" + p + r).digest()
                if not fn & 1:
                    while fn and not fn & 1:
                        fn >>= 1
                        sn >>= 1
            else:
                r = sha(b"\x01" + r + p).digest()
            fn >>= 1
            sn >>= 1
        if r != root:
            raise AssertionError("bare loop: bad proof")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--cache", type=Path, default=Path("/tmp/auditfed-bench-answers"))
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    key_file = args.cache / "log.key"
    if not key_file.exists():
        key_file.write_text(Signer.generate("bench.example/answers").private_key_string())
    signer = Signer.from_key(key_file.read_text())
    store = build(args.cache / f"log-{args.events}.db", args.events, signer)
    rng = random.Random(5)
    result: dict[str, Any] = {"events": store.size()}

    # traces
    trace_ids = [r[0] for r in store._reader().execute(
        "SELECT trace_id FROM event_index WHERE idx IN (%s)" % ",".join(  # noqa: UP031 - ints only
            str(rng.randrange(args.events // 4) * 4) for _ in range(args.runs))).fetchall()]
    times = [timed(lambda t=t: get_trace(store, t), 1)[0][0] for t in trace_ids]
    raw_times = [timed(raw(store, "SELECT i.idx, e.data FROM event_index i JOIN events e ON e.idx = i.idx "
                                  "WHERE i.trace_id = ?", t), 1)[0][0] for t in trace_ids]
    result["trace_lookup"] = {**summary_ms(times), "goal_p50_ms": 10, "raw_sql": summary_ms(raw_times),
                              "events_per_trace": get_trace(store, trace_ids[0])["events"]}

    # timeline of a principal's last 1,000 events, with aliases to expand
    directory = Directory({"user7@corp.example": ["github:user7-gh", "pg:user7_rw", "app:user7"]})
    times, answer = timed(lambda: principal_timeline(store, "user7@corp.example", directory=directory, limit=1000),
                          max(5, args.runs // 5))
    raw_times, _ = timed(raw(store, "SELECT i.idx, e.data FROM event_index i JOIN events e ON e.idx = i.idx WHERE "
                                    "i.principal = ? OR i.actor = ? ORDER BY i.idx DESC LIMIT 1000",
                             "user7@corp.example", "user7"), max(5, args.runs // 5))
    result["timeline_last_1000"] = {**summary_ms(times), "goal_p50_ms": 50, "events": answer["count"],
                                    "gaps": len(answer["gaps"]), "raw_sql": summary_ms(raw_times)}

    # who accessed one resource
    times, answer = timed(lambda: who_accessed(store, "billing.t7"), max(5, args.runs // 5))
    result["who_accessed"] = {**summary_ms(times), "goal_p50_ms": 50, "accesses": answer["count"],
                              "more": answer["more"]}

    # evidence: 10,000 events spread over the whole log
    query = "resource:billing.t7 OR resource:billing.t8 OR resource:billing.t9"
    out = io.BytesIO()
    started = time.perf_counter()
    summary = evidence.export(store, parse_query(query), out, query=query, verifier_key=signer.verifier_key(),
                              limit=10_000)
    export_s = time.perf_counter() - started
    bundle = out.getvalue()
    result["evidence_export"] = {"seconds": round(export_s, 3), "goal_s": 5, "entries": summary.entries,
                                 "bytes": len(bundle)}

    # offline verification vs the bare hashing loop, best of 5 each, interleaved
    lines = bundle.split(b"\n")
    checkpoint = Checkpoint.parse(orjson.loads(lines[0])["checkpoint"].split("\n\n")[0] + "\n")
    items = []
    for line in lines[1:-2]:
        entry = orjson.loads(line)
        index, hashes, _, _ = parse_tlog_proof(entry["proof"])
        items.append((__import__("base64").b64decode(entry["data"]), index, checkpoint.size, hashes))
    bare, verify_memo, verify_plain = [], [], []
    for _ in range(5):
        bare.append(bare_loop(items, checkpoint.root))
        started = time.perf_counter()
        report = evidence.verify(io.BytesIO(bundle), signer.verifier_key())
        verify_memo.append(time.perf_counter() - started)
        assert report.ok and report.verified == summary.entries, report.problems[:3]
        started = time.perf_counter()
        assert evidence.verify(io.BytesIO(bundle), signer.verifier_key(), shortcut=False).ok
        verify_plain.append(time.perf_counter() - started)
    result["evidence_verify"] = {
        "entries": len(items),
        "mean_proof_hashes": round(statistics.fmean(len(i[3]) for i in items), 1),
        "bare_loop_s": round(min(bare), 4),
        "verify_s": round(min(verify_memo), 4),
        "verify_without_shared_path_shortcut_s": round(min(verify_plain), 4),
        "speed_vs_bare_loop": round(min(bare) / min(verify_memo), 3),
        "speed_vs_bare_loop_without_shortcut": round(min(bare) / min(verify_plain), 3),
        "goal_speed_vs_bare_loop": 0.5,
    }
    store.close()
    emit(result)


if __name__ == "__main__":
    main()
