"""Errors and diagnostics of the Sigma rule tooling.

A rule auditfed cannot evaluate exactly is refused with :class:`RuleError` naming
the rule and the Sigma construct (modifier, value type, condition form) at fault,
never compiled into an approximate matcher.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["Diagnostic", "RuleError", "UnsupportedConstruct"]


class UnsupportedConstruct(Exception):
    """A Sigma construct the compiler does not implement (raised while compiling)."""

    def __init__(self, construct: str, message: str) -> None:
        super().__init__(f"{construct}: {message}")
        self.construct = construct
        self.message = message


class RuleError(Exception):
    """A rule that cannot be loaded or compiled."""

    def __init__(
        self,
        message: str,
        *,
        rule_id: str | None = None,
        title: str | None = None,
        path: str | None = None,
        construct: str | None = None,
    ) -> None:
        where = title or rule_id or "<unnamed rule>"
        if path:
            where = f"{where} ({path})"
        super().__init__(f"{where}: {message}")
        self.message = message
        self.rule_id = rule_id
        self.title = title
        self.path = path
        self.construct = construct

    def diagnostic(self) -> Diagnostic:
        return Diagnostic(
            severity="error",
            message=self.message,
            path=self.path,
            rule_id=self.rule_id,
            title=self.title,
            construct=self.construct,
        )


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """One finding of :func:`auditfed.detect.check_rules`."""

    severity: str  # "error" | "warning" | "ok"
    message: str
    path: str | None = None
    rule_id: str | None = None
    title: str | None = None
    construct: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        where = self.path or "<input>"
        who = f" [{self.title or self.rule_id}]" if (self.title or self.rule_id) else ""
        return f"{where}{who}: {self.severity}: {self.message}"
