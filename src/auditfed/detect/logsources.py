"""Where a Sigma rule looks: logsource → auditfed source kinds and field roots.

A Sigma rule's ``logsource`` (SigmaHQ specification, "Log Source": ``product``,
``service``, ``category``) says which logs it is written for. auditfed stores every
event in one canonical form whose ``source.kind`` names the format it came from and
whose ``original`` keeps the source's own record. A rule for a foreign product
(``aws``/``cloudtrail``, ``kubernetes``/``audit``, ``okta``, ``github``, ``gcp``)
therefore applies to events of the matching kind and resolves its fields inside
``original``; a ``product: auditfed`` rule applies to every kind (or to the kind
named by its ``service``) and resolves its fields in the canonical event.

Both tables are configurable: :class:`LogsourceMap` takes extra entries, and field
mappings (``{"<product>[/<service>]": {"<sigma field>": "<event path>"}}``) rename a
Sigma field to an absolute dotted path in the stored event.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

__all__ = [
    "ALL_KINDS",
    "DEFAULT_FIELD_MAPPINGS",
    "DEFAULT_LOGSOURCES",
    "LogsourceMap",
    "LogsourceTarget",
]

#: Marker meaning "every source kind".
ALL_KINDS = "*"


@dataclass(frozen=True, slots=True)
class LogsourceTarget:
    """The source kinds a logsource applies to and the event path fields live under."""

    kinds: frozenset[str]
    #: Dotted prefix prepended to the rule's field names ("original" or "" for canonical).
    root: str


#: ``(product, service)`` → target; ``service`` ``None`` matches any service.
DEFAULT_LOGSOURCES: dict[tuple[str, str | None], LogsourceTarget] = {
    ("aws", None): LogsourceTarget(frozenset({"cloudtrail"}), "original"),
    ("kubernetes", None): LogsourceTarget(frozenset({"k8s-audit"}), "original"),
    ("okta", None): LogsourceTarget(frozenset({"okta"}), "original"),
    ("github", None): LogsourceTarget(frozenset({"github-audit"}), "original"),
    ("gcp", "gcp.audit"): LogsourceTarget(frozenset({"gcp-audit"}), "original"),
    ("gcp", None): LogsourceTarget(frozenset({"google-workspace"}), "original"),
    ("postgresql", None): LogsourceTarget(frozenset({"pgaudit"}), "original"),
    ("auditfed", None): LogsourceTarget(frozenset({ALL_KINDS}), ""),
}

#: Default field renames. GCP audit rules in SigmaHQ use two conventions for the
#: LogEntry (``gcp.audit.method_name`` and a ``data.``-prefixed export); auditfed
#: keeps the raw LogEntry, so both are mapped onto ``original.protoPayload``.
DEFAULT_FIELD_MAPPINGS: dict[str, dict[str, str]] = {
    "gcp/gcp.audit": {
        "gcp.audit.method_name": "original.protoPayload.methodName",
        "data.protoPayload.serviceName": "original.protoPayload.serviceName",
        "data.protoPayload.resource.type": "original.resource.type",
        "data.protoPayload.methodName": "original.protoPayload.methodName",
        "data.protoPayload.logName": "original.logName",
        "data.protoPayload.authorizationInfo.permission": ("original.protoPayload.authorizationInfo.permission"),
        "data.protoPayload.authorizationInfo.granted": ("original.protoPayload.authorizationInfo.granted"),
    },
}


class LogsourceMap:
    """Resolve a rule's logsource to a :class:`LogsourceTarget` and its field mapping."""

    def __init__(
        self,
        logsources: Mapping[tuple[str, str | None], LogsourceTarget] | None = None,
        field_mappings: Mapping[str, Mapping[str, str]] | None = None,
    ) -> None:
        self.logsources = dict(DEFAULT_LOGSOURCES)
        if logsources:
            self.logsources.update(logsources)
        self.field_mappings: dict[str, dict[str, str]] = {
            key: dict(value) for key, value in DEFAULT_FIELD_MAPPINGS.items()
        }
        for key, value in (field_mappings or {}).items():
            self.field_mappings.setdefault(key, {}).update(value)

    def target(self, product: str | None, service: str | None) -> LogsourceTarget | None:
        """The target for ``product``/``service``; ``None`` if no mapping applies."""
        product = (product or "").lower()
        service = (service or "").lower() or None
        if product == "auditfed":
            if service:  # product: auditfed, service: <kind> → just that source kind
                return LogsourceTarget(frozenset({service}), "")
            return self.logsources[("auditfed", None)]
        found = self.logsources.get((product, service))
        if found is None:
            found = self.logsources.get((product, None))
        return found

    def mapping(self, product: str | None, service: str | None) -> dict[str, str]:
        """Sigma field → absolute event path for this logsource."""
        product = (product or "").lower()
        service = (service or "").lower()
        merged: dict[str, str] = {}
        merged.update(self.field_mappings.get(product, {}))
        if service:
            merged.update(self.field_mappings.get(f"{product}/{service}", {}))
        return merged

    def event_path(self, target: LogsourceTarget, mapping: Mapping[str, str], field: str) -> str:
        """Absolute dotted event path of a Sigma field under ``target``."""
        mapped = mapping.get(field)
        if mapped is not None:
            return mapped
        return f"{target.root}.{field}" if target.root else field
