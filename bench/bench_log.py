"""Proof serving and whole-log verification at 1,000,000 entries (issue #2).

Goals: inclusion and consistency proofs p50 ≤ 2 ms server-side; ``auditfed verify``
at least 50 % of a bare hashlib loop over the same leaf bytes (baseline in the same
run). The log is built in-process through the store and the tree appender the
sequencer uses (the HTTP ingest path is measured by bench_ingest).

    python -m bench.bench_log [--entries 1000000]
    python -m bench.bench_log --data-dir DIR --verify-only   # reuse a built log

A run prints its ``data_dir``; ``--data-dir`` reuses it (building 1M entries is
slow), ``--verify-only`` skips the proofs to iterate on ``verify``.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import tempfile
import time
from pathlib import Path

import httpx
from support.server import Server

from auditfed.cli.access import LocalLog
from auditfed.config import load_settings
from auditfed.identity.tokens import Caller
from auditfed.ingest.prepare import prepare_event
from auditfed.ingest.sequencer import Sequencer
from auditfed.ledger import consistency_proof, inclusion_proof
from auditfed.node import initialise, load_signer
from auditfed.store import open_store
from auditfed.verification import verify_log
from bench.common import emit, make_events, summary_ms

CHUNK = 20_000


def build(entries: int) -> Path:
    data_dir = Path(tempfile.mkdtemp(prefix="auditfed-bench-log-")) / "data"
    settings = load_settings(None, data_dir=data_dir)
    initialise(settings)
    store = open_store(settings.store_url)
    sequencer = Sequencer(store, load_signer(settings))
    sequencer.start()
    caller = Caller("bench", "source", "billing-api")
    template = make_events(CHUNK)
    for start in range(0, entries, CHUNK):
        for offset, event in enumerate(template):
            event["id"] = f"e{start + offset}"
        prepared = [prepare_event(e, i, caller, e["time"]) for i, e in enumerate(template)]
        sequencer.append_sync(prepared[: entries - start])
        if start % 200_000 == 0:
            sequencer.checkpoint_now()
    sequencer.checkpoint_now()
    sequencer.stop()
    store.close()
    return data_dir


def time_calls(call, count: int) -> list[float]:
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        call()
        samples.append(time.perf_counter() - started)
    return samples


def proofs(data_dir: Path, size: int) -> dict:
    store = open_store(load_settings(None, data_dir=data_dir).store_url)
    rng = random.Random(1)
    inclusion = time_calls(lambda: inclusion_proof(rng.randrange(size), size, store), 2000)
    consistency = time_calls(
        lambda: consistency_proof(rng.randrange(1, size), size, store), 2000
    )
    store.close()
    server = Server(data_dir, "--log-level", "warning").start()
    token = server.token("auditor")
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"}) as http:
        http_inclusion = time_calls(
            lambda: http.get("/v1/log/proof/inclusion",
                             params={"index": rng.randrange(size), "size": size}).raise_for_status(),
            500,
        )
    server.stop()
    return {
        "inclusion_server_side": summary_ms(inclusion),
        "consistency_server_side": summary_ms(consistency),
        "inclusion_http_round_trip": summary_ms(http_inclusion),
        "goal_p50_ms": 2.0,
        "pass": summary_ms(inclusion)["p50_ms"] <= 2 and summary_ms(consistency)["p50_ms"] <= 2,
    }


def verification(data_dir: Path) -> dict:
    settings = load_settings(None, data_dir=data_dir)
    log = LocalLog(settings)
    leaves = [data for _, data in log.entries(0, log.size())]
    started = time.perf_counter()
    for data in leaves:
        hashlib.sha256(b"\x00" + data).digest()
    bare = time.perf_counter() - started
    verifier = load_signer(settings).verifier()
    started = time.perf_counter()
    report = verify_log(log, verifier)
    ours = time.perf_counter() - started
    log.close()
    assert report.ok, report.problem
    return {
        "entries": report.entries,
        "verify_entries_per_s": round(report.entries / ours),
        "bare_hash_loop_entries_per_s": round(len(leaves) / bare),
        "ratio": round(bare / ours, 3),
        "goal_ratio": 0.5,
        "pass": bare / ours >= 0.5,
    }


def run(entries: int = 1_000_000, data_dir: Path | None = None, verify_only: bool = False) -> dict:
    started = time.perf_counter()
    if data_dir is None:
        data_dir = build(entries)
    else:
        log = LocalLog(load_settings(None, data_dir=data_dir))
        entries = log.size()
        log.close()
    built = time.perf_counter() - started
    result: dict = {"benchmark": "log", "entries": entries, "data_dir": str(data_dir),
                    "build_seconds": round(built, 1)}
    if not verify_only:
        result["proofs"] = proofs(data_dir, entries)
    result["verify"] = verification(data_dir)
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--data-dir", type=Path, help="reuse the log of an earlier run instead of building one")
    parser.add_argument("--verify-only", action="store_true", help="measure verify only, not the proofs")
    args = parser.parse_args()
    emit(run(args.entries, args.data_dir, args.verify_only))
