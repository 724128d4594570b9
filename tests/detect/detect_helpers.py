"""Shared helpers of the detection tests: sample events and small rule builders."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from auditfed.detect import DetectionEngine
from auditfed.detect.rules import load_rules

DATA = Path(__file__).resolve().parent.parent / "data"
CLOUDTRAIL = DATA / "cloudtrail" / "stratus-red-team"
K8S = DATA / "k8s-audit"
SIGMA = DATA / "sigma" / "rules"


def _normaliser(kind: str) -> Any:
    """The real source normaliser when it is importable, else None."""
    try:
        if kind == "cloudtrail":
            from auditfed.sources.cloudtrail import normalise
        else:
            from auditfed.sources.k8s import normalise
    except Exception:  # pragma: no cover - sources are developed in parallel
        return None
    return normalise


def wrap_cloudtrail(record: dict[str, Any]) -> dict[str, Any]:
    normalise = _normaliser("cloudtrail")
    if normalise is not None:
        try:
            event = normalise(record)
            if event.get("original") == record:
                return event
        except Exception:  # pragma: no cover
            pass
    return {
        "action": record["eventName"],
        "actor": {"id": record.get("userIdentity", {}).get("arn", "unknown")},
        "source": {"service": record["eventSource"], "kind": "cloudtrail"},
        "time": record["eventTime"],
        "original": record,
    }


def wrap_k8s(record: dict[str, Any]) -> dict[str, Any]:
    normalise = _normaliser("k8s")
    if normalise is not None:
        try:
            event = normalise(record)
            if event.get("original") == record:
                return event
        except Exception:  # pragma: no cover
            pass
    return {
        "action": record["verb"],
        "actor": {"id": record["user"]["username"]},
        "source": {"service": "kubernetes", "kind": "k8s-audit"},
        "time": record.get("stageTimestamp") or record["timestamp"],
        "original": record,
    }


def cloudtrail_events(name: str) -> list[dict[str, Any]]:
    records = json.loads((CLOUDTRAIL / name).read_text())
    return [wrap_cloudtrail(r) for r in records]


def k8s_event(name: str) -> dict[str, Any]:
    return wrap_k8s(json.loads((K8S / name).read_text()))


def all_samples() -> list[tuple[str, dict[str, Any]]]:
    """(file name, event) for every shared CloudTrail and Kubernetes sample."""
    out = []
    for path in sorted(CLOUDTRAIL.glob("*.json")):
        out.extend((path.name, e) for e in cloudtrail_events(path.name))
    for path in sorted(K8S.glob("*.json")):
        out.append((path.name, k8s_event(path.name)))
    return out


def engine_from_yaml(text: str, **kwargs: Any) -> DetectionEngine:
    ruleset = load_rules(texts=[("inline.yml", text)])
    assert not ruleset.errors, [str(e) for e in ruleset.errors]
    return DetectionEngine(ruleset, **kwargs)


def auditfed_rule(detection: str, *, title: str = "Test rule", extra: str = "") -> str:
    """A product: auditfed rule with the given (indented) detection block."""
    return (
        f"title: {title}\nid: 11111111-1111-4111-8111-111111111111\nstatus: test\n"
        f"logsource:\n    product: auditfed\n{extra}detection:\n{detection}"
    )


def matches(rule_text: str, event: dict[str, Any]) -> bool:
    engine = engine_from_yaml(rule_text)
    return bool(engine.matching_rules(event))


def event(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "action": "test.action",
        "outcome": "success",
        "actor": {"id": "alice"},
        "source": {"service": "svc", "kind": "app"},
        "time": "2026-01-01T00:00:00Z",
    }
    base.update(fields)
    return base
