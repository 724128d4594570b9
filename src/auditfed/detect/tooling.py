"""Rule tooling behind ``auditfed rules check`` and ``auditfed rules test``.

:func:`check_rules` loads Sigma rule files with pySigma and compiles them exactly as
the server would, reporting per rule whether it is accepted or refused (and why).
:func:`test_rules` runs the same :class:`~auditfed.detect.engine.DetectionEngine`
offline over events and yields one record per match with the source record's own
id (CloudTrail ``eventID``, Kubernetes ``auditID``, Okta ``uuid``, GitHub
``_document_id``, GCP ``insertId``) and the event's position in its input file.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from auditfed.detect.engine import DetectionEngine
from auditfed.detect.errors import Diagnostic
from auditfed.detect.logsources import LogsourceMap
from auditfed.detect.rules import load_rules

__all__ = ["check_rules", "event_id", "test_rules"]

_ID_FIELDS = ("eventID", "auditID", "uuid", "_document_id", "insertId", "id")


def event_id(event: Mapping[str, Any]) -> str | None:
    """The source record's own id, else the canonical event id."""
    original = event.get("original")
    if isinstance(original, Mapping):
        for name in _ID_FIELDS:
            value = original.get(name)
            if isinstance(value, str | int) and not isinstance(value, bool):
                return str(value)
    value = event.get("id")
    return str(value) if value is not None else None


def check_rules(
    paths: Iterable[str | Path],
    *,
    field_mappings: Mapping[str, Mapping[str, str]] | None = None,
) -> list[Diagnostic]:
    """Validate rule files: one ``ok`` diagnostic per accepted rule, errors for the rest.

    Warnings (duplicate ids) are included; the list is sorted by path.
    """
    ruleset = load_rules(paths, logsources=LogsourceMap(None, field_mappings))
    found: list[Diagnostic] = [error.diagnostic() for error in ruleset.errors]
    found.extend(ruleset.warnings)
    for rule in [*ruleset.detections, *ruleset.correlations]:
        kind = "correlation" if rule in ruleset.correlations else "detection"
        found.append(
            Diagnostic(
                "ok",
                f"{kind} rule compiled",
                path=rule.meta.path,
                rule_id=rule.meta.id,
                title=rule.meta.title,
            )
        )
    found.sort(key=lambda d: (d.path or "", d.severity != "error", d.title or ""))
    return found


def test_rules(
    rule_paths: Iterable[str | Path],
    events: Iterable[tuple[int, Mapping[str, Any]]],
    *,
    field_mappings: Mapping[str, Mapping[str, str]] | None = None,
    allowed_lateness: float = 60.0,
) -> Iterator[dict[str, Any]]:
    """Run rules over ``(position, event)`` pairs; yield one record per match.

    Every rule that matches counts, including rules referenced by a correlation
    without ``generate``. A correlation alert is reported on the event that
    completed it. Records: ``{"rule_id", "rule_title", "event_id", "index"}``.
    """
    engine = DetectionEngine(list(rule_paths), field_mappings=field_mappings, allowed_lateness=allowed_lateness)
    silent = {rule.id for rule in engine.ruleset.detections if not rule.meta.output}
    by_position: dict[int, Mapping[str, Any]] = {}
    for position, event in events:
        ev = dict(event)
        by_position[position] = ev
        alerts = engine.process(position, ev)
        reported = {a.rule_id for a in alerts if a.type == "detection"}
        for rule in engine.matching_rules(ev) if silent else ():
            if rule.id in silent and rule.id not in reported:
                yield {
                    "rule_id": rule.id,
                    "rule_title": rule.meta.title,
                    "event_id": event_id(ev),
                    "index": position,
                }
        for alert in alerts:
            yield {
                "rule_id": alert.rule_id,
                "rule_title": alert.title,
                "event_id": event_id(ev),
                "index": position,
            }


test_rules.__test__ = False  # type: ignore[attr-defined]  # not a pytest test


def main(argv: list[str] | None = None) -> int:
    """Script check: ``python -m auditfed.detect.tooling RULES...`` (exit 1 on refusals)."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    diagnostics = check_rules(args or [str(Path(__file__).resolve().parent.parent / "rules")])
    refused = [d for d in diagnostics if d.severity == "error"]
    for d in diagnostics:
        if d.severity != "ok":
            print(d)
    ok = sum(1 for d in diagnostics if d.severity == "ok")
    print(f"{ok} rules compiled, {len(refused)} refused")
    return 1 if refused else 0


if __name__ == "__main__":
    raise SystemExit(main())
