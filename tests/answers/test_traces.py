"""Trace assembly: order, span tree, each service's part, late arrivals and missing links."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from auditfed.errors import InvalidInput, NotFound
from auditfed.query.traces import MAX_DEPTH, assemble_trace, get_trace

from .helpers import event, open_log

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


def hop(service: str, span: str, parent: str | None, ms: int, action: str = "http.request") -> dict:
    trace = {"trace_id": TRACE, "span_id": span}
    if parent:
        trace["parent_span_id"] = parent
    return event(action, service=service, time=f"2026-11-27T10:00:00.{ms:03d}000Z", trace=trace)


def spans(n: int) -> list[str]:
    return [f"{i + 1:016x}" for i in range(n)]


def test_events_arriving_out_of_order_are_ordered_by_time_and_flagged_late() -> None:
    s = spans(4)
    happened = [hop("web-gateway", s[0], None, 0), hop("billing-api", s[1], s[0], 12),
                hop("postgresql", s[2], s[1], 20, "db.query"), hop("s3-export", s[3], s[1], 45, "data.export")]
    arrival = [3, 0, 2, 1]  # log index of each event: the export arrived first, the gateway last
    rows = [(arrival[i], e) for i, e in enumerate(happened)]
    random.Random(1).shuffle(rows)
    trace = assemble_trace(TRACE, rows)
    assert [step["service"] for step in trace["steps"]] == ["web-gateway", "billing-api", "postgresql", "s3-export"]
    assert [step["offset_ms"] for step in trace["steps"]] == [0.0, 12.0, 20.0, 45.0]
    assert [step["since_previous_ms"] for step in trace["steps"]] == [None, 12.0, 8.0, 25.0]
    assert [step["late"] for step in trace["steps"]] == [True, False, True, False]
    assert trace["late_arrivals"] == 2
    root, = trace["tree"]
    assert root["service"] == "web-gateway" and root["duration_ms"] == 45.0
    billing, = root["children"]
    assert [c["service"] for c in billing["children"]] == ["postgresql", "s3-export"]
    assert billing["after_parent_ms"] == 12.0 and billing["duration_ms"] == 33.0
    assert [c["after_parent_ms"] for c in billing["children"]] == [8.0, 33.0]
    assert trace["complete"] and trace["missing_links"] == []


def test_a_missing_parent_is_a_flagged_root_and_the_rest_still_forms_a_tree() -> None:
    s = spans(4)
    rows = [(0, hop("web-gateway", s[0], None, 0)),
            # billing-api (span s[1]) logged nothing: postgresql names a parent that is absent
            (1, hop("postgresql", s[2], s[1], 20)), (2, hop("s3-export", s[3], s[2], 30))]
    trace = assemble_trace(TRACE, rows)
    assert [n["service"] for n in trace["tree"]] == ["web-gateway", "postgresql"]
    orphan = trace["tree"][1]
    assert orphan["missing_parent"] and orphan["children"][0]["service"] == "s3-export"
    assert trace["missing_links"] == [{"span_id": s[2], "parent_span_id": s[1],
                                       "reason": "parent span not in the trace", "service": "postgresql", "index": 1,
                                       "time": "2026-11-27T10:00:00.020000Z"}]
    assert not trace["complete"]


def test_each_services_part_and_several_events_per_span() -> None:
    s = spans(2)
    rows = [(0, hop("api", s[0], None, 0)), (1, hop("db", s[1], s[0], 5, "db.query")),
            (2, hop("db", s[1], s[0], 9, "db.commit")), (3, hop("api", s[0], None, 15, "http.response"))]
    trace = assemble_trace(TRACE, rows)
    api, db = trace["services"]
    assert (api["service"], api["events"], api["duration_ms"], api["indexes"]) == ("api", 2, 15.0, [0, 3])
    assert (db["service"], db["events"], db["duration_ms"], db["actions"]) == ("db", 2, 4.0, ["db.query", "db.commit"])
    root, = trace["tree"]
    assert len(root["events"]) == 2 and len(root["children"][0]["events"]) == 2


def test_events_of_other_traces_and_without_spans() -> None:
    other = hop("x", "00000000000000aa", None, 1)
    other["trace"]["trace_id"] = "f" * 32
    plain = event("auth.login", time="2026-11-27T10:00:00.002000Z", trace={"trace_id": TRACE})
    trace = assemble_trace(TRACE, [(0, other), (1, plain)])
    assert trace["events"] == 1 and trace["tree"][0]["span_id"] is None
    assert assemble_trace(TRACE, [])["events"] == 0


def test_cycles_and_very_deep_chains_stay_printable() -> None:
    a, b = spans(2)
    cyclic = assemble_trace(TRACE, [(0, hop("a", a, b, 0)), (1, hop("b", b, a, 1))])
    assert len(cyclic["tree"]) == 1 and cyclic["tree"][0]["cycle"]
    assert cyclic["missing_links"][0]["reason"] == "cycle"
    chain = spans(MAX_DEPTH * 2 + 5)
    rows = [(i, hop("svc", chain[i], chain[i - 1] if i else None, 0)) for i in range(len(chain))]
    deep = assemble_trace(TRACE, rows)
    assert len(deep["tree"]) == 3 and deep["tree"][1]["cut_at_depth"] == MAX_DEPTH
    __import__("orjson").dumps(deep)  # serialisable (orjson refuses deep nesting)


def test_get_trace_reads_the_store(tmp_path: Path) -> None:
    s = spans(2)
    with open_log(tmp_path) as log:
        log.append([hop("b", s[1], s[0], 7), hop("a", s[0], None, 0), event("noise", trace={"trace_id": "a" * 32})])
        trace = get_trace(log.store, TRACE)
        assert [step["service"] for step in trace["steps"]] == ["a", "b"]
        with pytest.raises(NotFound):
            get_trace(log.store, "b" * 32)
        for hostile in ("*", "a*", "'; DROP TABLE events; --", "x" * 200, ""):
            with pytest.raises(InvalidInput):
                get_trace(log.store, hostile)
