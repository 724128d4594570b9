"""Benchmark: auditfed's streaming Sigma engine vs pySigma's SQLite backend (Zircolite style).

Both run the whole default rule pack (``src/auditfed/rules``) over the same events:
the shared CloudTrail (Stratus Red Team) and Kubernetes audit samples, replicated to
``--events`` (default 200,000) with times shifted per replica so event time keeps
moving forward.

* auditfed: ``DetectionEngine.process(index, event)`` per event, timed end to end
  (correlation windows included).
* baseline: each detection rule converted by ``pysigma-backend-sqlite`` and run as
  ``SELECT rowid FROM logs WHERE ...`` over an in-memory SQLite table of the same
  events, flattened into a wide table (one column per dotted field, ``COLLATE
  NOCASE``, a REGEXP function, a full-text column for keyword rules) -- the approach
  of Zircolite. Only the queries are timed, not the loading. Correlation rules are
  not run on the SQL side (they would only add time to the baseline).

Prints one JSON object. Run: ``.venv/bin/python bench/bench_detect.py [--events N]``.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import sqlite3
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from sigma.backends.sqlite import sqliteBackend  # noqa: E402
from sigma.collection import SigmaCollection  # noqa: E402
from sigma.rule import SigmaRule  # noqa: E402

from auditfed.detect import DEFAULT_RULES_DIR, DetectionEngine  # noqa: E402
from auditfed.detect.rules import load_collection  # noqa: E402

DATA = ROOT / "tests" / "data"


def _wrap(kind: str, record: dict[str, Any]) -> dict[str, Any]:
    try:
        if kind == "cloudtrail":
            from auditfed.sources.cloudtrail import normalise
        else:
            from auditfed.sources.k8s import normalise
        event = normalise(record)
        if event.get("original") == record:
            return event
    except Exception:
        pass
    if kind == "cloudtrail":
        return {
            "action": record["eventName"],
            "actor": {"id": record.get("userIdentity", {}).get("arn", "unknown")},
            "source": {"service": record["eventSource"], "kind": "cloudtrail"},
            "time": record["eventTime"],
            "original": record,
        }
    return {
        "action": record["verb"],
        "actor": {"id": record["user"]["username"]},
        "source": {"service": "kubernetes", "kind": "k8s-audit"},
        "time": record.get("stageTimestamp") or record["timestamp"],
        "original": record,
    }


def base_events() -> list[dict[str, Any]]:
    events = []
    for path in sorted((DATA / "cloudtrail" / "stratus-red-team").glob("*.json")):
        events.extend(_wrap("cloudtrail", r) for r in json.loads(path.read_text()))
    for path in sorted((DATA / "k8s-audit").glob("*.json")):
        events.append(_wrap("k8s", json.loads(path.read_text())))
    return events


def replicate(events: list[dict[str, Any]], count: int) -> list[dict[str, Any]]:
    """Copies of the samples, each replica one day later than the previous one."""
    out: list[dict[str, Any]] = []
    replica = 0
    while len(out) < count:
        shift = timedelta(days=replica)
        for event in events:
            if len(out) >= count:
                break
            moment = datetime.fromisoformat(event["time"]) + shift
            copy = dict(event)
            copy["time"] = moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            out.append(copy)
        replica += 1
    return out


# --------------------------------------------------------------------------- SQL side


def _flatten(obj: Any, prefix: str, out: dict[str, Any]) -> None:
    if isinstance(obj, dict):
        for key, value in obj.items():
            _flatten(value, f"{prefix}.{key}" if prefix else key, out)
    elif isinstance(obj, list):
        out[prefix] = json.dumps(obj)
    elif isinstance(obj, bool):
        out[prefix] = "true" if obj else "false"
    else:
        out[prefix] = obj


def _leaves(obj: Any, out: list[str]) -> None:
    if isinstance(obj, dict):
        for value in obj.values():
            _leaves(value, out)
    elif isinstance(obj, list):
        for value in obj:
            _leaves(value, out)
    elif obj is not None:
        out.append(str(obj))


def flatten_event(event: dict[str, Any]) -> dict[str, Any]:
    """One wide row: the original record's dotted fields plus the canonical fields."""
    row: dict[str, Any] = {}
    _flatten(event.get("original") or {}, "", row)
    canonical: dict[str, Any] = {}
    _flatten({k: v for k, v in event.items() if k != "original"}, "", canonical)
    for key, value in canonical.items():
        row.setdefault(key, value)
    leaves: list[str] = []
    _leaves(event.get("original") or event, leaves)
    row["_fulltext"] = "\n".join(leaves)
    return row


def sql_queries() -> tuple[list[str], list[str]]:
    collection, _, errors = load_collection([DEFAULT_RULES_DIR])
    assert not errors
    backend = sqliteBackend(collate_nocase=True, fulltext_field="_fulltext")
    queries: list[str] = []
    fields: set[str] = set()
    detections = [r for r in collection.rules if isinstance(r, SigmaRule)]
    for rule in detections:
        for query in backend.convert(SigmaCollection([rule]), output_format="default"):
            queries.append(query)
        fields.update(backend.required_fields(rule))
    return queries, sorted(fields)


def build_table(events: list[dict[str, Any]], extra_fields: list[str]) -> sqlite3.Connection:
    rows = [flatten_event(e) for e in events]
    columns: dict[str, None] = {}
    for row in rows:
        for key in row:
            columns.setdefault(key, None)
    for name in extra_fields:
        columns.setdefault(name, None)
    lowered: dict[str, str] = {}
    for name in columns:  # SQLite column names are case-insensitive
        lowered.setdefault(name.lower(), name)
    names = list(lowered.values())
    conn = sqlite3.connect(":memory:")

    def regexp(pattern: str, value: Any) -> bool:
        return value is not None and re.search(pattern, str(value)) is not None

    conn.create_function("regexp", 2, regexp, deterministic=True)
    quoted = ", ".join(f"`{n}` TEXT COLLATE NOCASE" for n in names)
    conn.execute(f"CREATE TABLE logs ({quoted})")
    placeholders = ", ".join("?" for _ in names)
    index = {n.lower(): i for i, n in enumerate(names)}
    values = []
    for row in rows:
        record: list[Any] = [None] * len(names)
        for key, value in row.items():
            record[index[key.lower()]] = value
        values.append(record)
    conn.executemany(f"INSERT INTO logs VALUES ({placeholders})", values)
    conn.commit()
    return conn


def parity(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-rule match counts of both engines on the unreplicated samples (untimed)."""
    engine = DetectionEngine([DEFAULT_RULES_DIR])
    ours: dict[str, int] = {}
    for event in samples:
        for rule in engine.matching_rules(event):
            ours[rule.id] = ours.get(rule.id, 0) + 1
    collection, _, _ = load_collection([DEFAULT_RULES_DIR])
    backend = sqliteBackend(collate_nocase=True, fulltext_field="_fulltext")
    fields: set[str] = set()
    per_rule: list[tuple[str, str]] = []
    for rule in collection.rules:
        if isinstance(rule, SigmaRule):
            (query,) = backend.convert(SigmaCollection([rule]))
            per_rule.append((str(rule.id), query))
            fields.update(backend.required_fields(rule))
    conn = build_table(samples, sorted(fields))
    sql = {rid: len(conn.execute(q).fetchall()) for rid, q in per_rule}
    sql = {rid: n for rid, n in sql.items() if n}
    differing = sorted(rid for rid in set(ours) | set(sql) if ours.get(rid) != sql.get(rid))
    return {"rules_matching": len(ours), "same_counts_per_rule": not differing, "differ": differing}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=3, help="best of N runs")
    args = parser.parse_args()

    samples = base_events()
    events = replicate(samples, args.events)

    engine_rules = DetectionEngine([DEFAULT_RULES_DIR])
    assert not engine_rules.errors
    ours_best = float("inf")
    ours_alerts = 0
    ours_detection_matches = 0
    for _ in range(args.repeat):
        engine = DetectionEngine(engine_rules.ruleset)
        process = engine.process
        alerts = 0
        detections = 0
        start = time.perf_counter()
        for index, event in enumerate(events):
            found = process(index, event)
            if found:
                alerts += len(found)
                detections += sum(1 for a in found if a.type == "detection")
        elapsed = time.perf_counter() - start
        if elapsed < ours_best:
            ours_best, ours_alerts, ours_detection_matches = elapsed, alerts, detections

    queries, fields = sql_queries()
    load_start = time.perf_counter()
    conn = build_table(events, fields)
    load_seconds = time.perf_counter() - load_start
    sql_best = float("inf")
    sql_matches = 0
    for _ in range(args.repeat):
        matches = 0
        start = time.perf_counter()
        for query in queries:
            matches += len(conn.execute(query).fetchall())
        elapsed = time.perf_counter() - start
        if elapsed < sql_best:
            sql_best, sql_matches = elapsed, matches

    check = parity(samples)
    ours_rate = len(events) / ours_best
    sql_rate = len(events) / sql_best
    print(
        json.dumps(
            {
                "benchmark": "detect",
                "events": len(events),
                "sample_events": len(samples),
                "rules": {
                    "compiled": engine_rules.rule_count,
                    "detection": len(engine_rules.ruleset.detections),
                    "correlation": len(engine_rules.ruleset.correlations),
                    "sql_queries": len(queries),
                },
                "auditfed": {
                    "seconds": round(ours_best, 4),
                    "events_per_second": round(ours_rate),
                    "us_per_event": round(ours_best / len(events) * 1e6, 3),
                    "alerts": ours_alerts,
                    "detection_alerts": ours_detection_matches,
                },
                "sqlite_baseline": {
                    "query_seconds": round(sql_best, 4),
                    "events_per_second": round(sql_rate),
                    "matches_all_detection_rules": sql_matches,
                    "load_seconds_not_counted": round(load_seconds, 2),
                },
                "parity_on_samples": check,
                "ratio": round(ours_rate / sql_rate, 2),
                "goal_ratio": 2.0,
                "python": platform.python_version(),
                "machine": platform.machine(),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
