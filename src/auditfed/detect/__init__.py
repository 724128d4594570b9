"""Real-time detection: Sigma rules and Sigma correlation rules on the live trail.

Sigma (SigmaHQ ``sigma-specification``) detection rules and correlation rules
(Sigma correlation rules specification v2) are parsed with pySigma and compiled
into auditfed's own matchers (no query backend). :class:`DetectionEngine` runs them
on each committed event in log order and returns :class:`Alert` objects;
:func:`check_rules` and :func:`test_rules` are the rule tooling behind
``auditfed rules check|test``. The default rule pack ships in ``auditfed/rules``.
"""

from __future__ import annotations

from pathlib import Path

from auditfed.detect.engine import Alert, DetectionEngine
from auditfed.detect.errors import Diagnostic, RuleError
from auditfed.detect.logsources import LogsourceMap, LogsourceTarget
from auditfed.detect.rules import RuleSet, load_rules
from auditfed.detect.tooling import check_rules, event_id, test_rules

__all__ = [
    "DEFAULT_RULES_DIR",
    "Alert",
    "DetectionEngine",
    "Diagnostic",
    "LogsourceMap",
    "LogsourceTarget",
    "RuleError",
    "RuleSet",
    "check_rules",
    "event_id",
    "load_rules",
    "test_rules",
]

#: The default rule pack (SigmaHQ rules with attribution, plus auditfed's own).
DEFAULT_RULES_DIR = Path(__file__).resolve().parent.parent / "rules"
