"""Principal directory: one identity across every system that names it.

A person or workload is known by many names: GitHub ``alice``, Kubernetes
``oidc:alice@corp.example``, AWS ``arn:aws:sts::123456789012:assumed-role/dev/alice``,
PostgreSQL ``alice_rw``. The directory links these *aliases* — written
``<system>:<actor id>`` (split at the first colon, so ``k8s:oidc:alice@corp.example``
is system ``k8s``, id ``oidc:alice@corp.example``) — to one *principal*
(conventionally the person's e-mail address), and adds *rules* for names that follow a
pattern (an AWS assumed-role session name, an e-mail claim).

Configuration (the ``[directory]`` table of ``auditfed.toml``, or a TOML/JSON file it
names with ``file = "principals.toml"``)::

    [directory]
    file = "principals.toml"                     # optional, merged with the below
    case_insensitive = ["github", "okta", "email"]

    [directory.principals]
    "alice@corp.example" = ["github:alice", "k8s:oidc:alice@corp.example",
                            "aws:arn:aws:iam::123456789012:user/alice", "pg:alice_rw"]

    [[directory.rules]]
    system = "aws"
    pattern = "arn:aws:sts::*:assumed-role/*/{name}"
    principal = "{name}@corp.example"

    [directory.sources]                          # namespace of app/otel events per service
    "billing-api" = "okta"

Patterns: ``*`` matches a run of characters without ``/``, ``**`` any run,
``{name}`` captures a (shortest) run without ``/`` and ``{name:REGEX}`` captures ``REGEX``
(braces not allowed inside; RE2 syntax). Templates substitute ``{name}``. Actor ids
and principals are the producers' and the auditors', so patterns and inverted
templates run on RE2 (:mod:`auditfed.safe_regex`, linear time, no backtracking). Exact links win over
rules; rules apply in order, first match wins.

Resolution is a dictionary lookup after the first call for a given alias (bounded
cache, cleared on every change). :meth:`Directory.aliases` and
:meth:`Directory.alias_patterns` give the query layer what it needs to expand a
principal into actor ids, so events stored before a link was added are still found.
"""

from __future__ import annotations

import json
import re
import threading
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from auditfed.errors import ConfigError
from auditfed.safe_regex import Regex, RegexRefused, compile_regex, escape

__all__ = [
    "SOURCE_KIND_SYSTEMS",
    "Directory",
    "DirectoryConfig",
    "DirectoryRule",
    "Pattern",
    "parse_alias",
    "render_template",
    "system_for_source",
]

#: Alias namespace of the actor ids each event source kind produces.
SOURCE_KIND_SYSTEMS: dict[str, str] = {
    "k8s-audit": "k8s",
    "cloudtrail": "aws",
    "pgaudit": "pg",
    "github-audit": "github",
    "okta": "okta",
    "otel": "app",
    "app": "app",
    "cloudevents": "app",
}

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?::([^{}]+))?\}")
_TOKEN = re.compile(r"\*\*|\*|\{[A-Za-z_][A-Za-z0-9_]*(?::[^{}]+)?\}")
_CACHE_LIMIT = 65_536


def parse_alias(alias: str) -> tuple[str, str]:
    """``"k8s:oidc:alice@corp.example"`` → ``("k8s", "oidc:alice@corp.example")``."""
    system, sep, actor_id = alias.partition(":")
    if not sep or not system or not actor_id:
        raise ConfigError(f"alias must be '<system>:<actor id>': {alias!r}")
    return system, actor_id


class Pattern:
    """A glob with named captures, matched against a whole actor id."""

    __slots__ = ("_parts", "names", "regex", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        parts: list[str] = []
        # (kind, value) where kind is "lit", "star", "glob" or a capture name
        self._parts: list[tuple[str, str]] = []
        names: list[str] = []
        pos = 0
        for m in _TOKEN.finditer(text):
            if m.start() > pos:
                lit = text[pos : m.start()]
                parts.append(escape(lit))
                self._parts.append(("lit", lit))
            tok = m.group(0)
            if tok == "**":
                parts.append(".*")
                self._parts.append(("glob", "**"))
            elif tok == "*":
                parts.append("[^/]*")
                self._parts.append(("glob", "*"))
            else:
                pm = _PLACEHOLDER.fullmatch(tok)
                assert pm is not None
                name, rx = pm.group(1), pm.group(2) or "[^/]+?"
                if name in names:
                    raise ConfigError(f"pattern {text!r} captures {name!r} twice")
                names.append(name)
                parts.append(f"(?P<{name}>{rx})")
                self._parts.append(("cap", name))
            pos = m.end()
        if pos < len(text):
            parts.append(escape(text[pos:]))
            self._parts.append(("lit", text[pos:]))
        self.names = tuple(names)
        self.regex = _compile(f"pattern {text!r}", "".join(parts), ignore_case=False)

    def match(self, value: str) -> dict[str, str] | None:
        m = self.regex.fullmatch(value)
        return m.groupdict() if m else None

    def glob(self, values: Mapping[str, str]) -> str:
        """The pattern with known captures filled in and the rest as ``*`` (for LIKE)."""
        out = []
        for kind, val in self._parts:
            if kind == "lit":
                out.append(val)
            elif kind == "cap" and val in values:
                out.append(values[val])
            else:
                out.append("*")
        return "".join(out)

    def __repr__(self) -> str:
        return f"Pattern({self.text!r})"


def render_template(template: str, values: Mapping[str, Any]) -> str:
    """Replace ``{name}`` in ``template``; a missing or non-string value is an error."""

    def sub(m: re.Match[str]) -> str:
        v = values.get(m.group(1))
        if isinstance(v, bool) or not isinstance(v, str | int):
            raise KeyError(m.group(1))
        return str(v)

    return _PLACEHOLDER.sub(sub, template)


def _template_names(template: str) -> set[str]:
    return {m.group(1) for m in _PLACEHOLDER.finditer(template)}


def _invert_template(template: str) -> Regex:
    parts, pos = [], 0
    for m in _PLACEHOLDER.finditer(template):
        parts.append(escape(template[pos : m.start()]))
        parts.append(f"(?P<{m.group(1)}>.+?)")
        pos = m.end()
    parts.append(escape(template[pos:]))
    return _compile(f"principal template {template!r}", "".join(parts), ignore_case=True)


def _compile(what: str, pattern: str, *, ignore_case: bool) -> Regex:
    try:
        return compile_regex(pattern, dot_all=True, ignore_case=ignore_case)
    except RegexRefused as exc:
        raise ConfigError(f"directory rule {what}: {exc.detail}") from None


class DirectoryRule(BaseModel):
    """``system`` ids matching ``pattern`` resolve to the rendered ``principal``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    system: str = Field(min_length=1)
    pattern: str = Field(min_length=1)
    principal: str = Field(min_length=1)
    lower: bool = False


class DirectoryConfig(BaseModel):
    """The ``[directory]`` table; ``principals`` maps principal → aliases."""

    model_config = ConfigDict(extra="forbid")

    file: str | None = None
    principals: dict[str, list[str]] = Field(default_factory=dict)
    rules: list[DirectoryRule] = Field(default_factory=list)
    case_insensitive: list[str] = Field(default_factory=lambda: ["github", "okta", "email"])
    sources: dict[str, str] = Field(default_factory=dict)

    @field_validator("principals", mode="before")
    @classmethod
    def _principal_list(cls, v: Any) -> Any:
        # also accept [[directory.principals]] principal = "...", aliases = [...]
        if isinstance(v, list):
            out: dict[str, list[str]] = {}
            for item in v:
                if not isinstance(item, dict) or "principal" not in item:
                    raise ValueError("each principal entry needs 'principal' and 'aliases'")
                out.setdefault(item["principal"], []).extend(item.get("aliases", []))
            return out
        return v


@dataclass(frozen=True, slots=True)
class _CompiledRule:
    system: str
    pattern: Pattern
    principal: str
    lower: bool
    inverse: Regex


def system_for_source(kind: str, service: str | None = None, overrides: Mapping[str, str] | None = None) -> str:
    """Alias namespace for an event's ``source.kind`` (and ``source.service``).

    ``k8s-audit`` → ``k8s``, ``cloudtrail`` → ``aws``, ``pgaudit`` → ``pg``,
    ``github-audit`` → ``github``, ``okta`` → ``okta``; application sources (``app``,
    ``otel``, ``cloudevents``) use ``overrides[service]`` when configured, else ``app``.
    An unknown kind is its own namespace.
    """
    if overrides and service is not None and service in overrides:
        return overrides[service]
    return SOURCE_KIND_SYSTEMS.get(kind, kind)


class Directory:
    """Alias → principal resolution with exact links and pattern rules. Thread-safe."""

    def __init__(
        self,
        links: Mapping[str, Iterable[str]] | None = None,
        rules: Iterable[DirectoryRule | Mapping[str, Any]] = (),
        *,
        case_insensitive: Iterable[str] = ("github", "okta", "email"),
        sources: Mapping[str, str] | None = None,
    ) -> None:
        self._ci = frozenset(case_insensitive)
        self._sources = dict(sources or {})
        self._lock = threading.Lock()
        self._links: dict[tuple[str, str], str] = {}
        self._by_principal: dict[str, list[tuple[str, str]]] = {}
        self._rules: list[_CompiledRule] = []
        self._cache: dict[tuple[str, str], str | None] = {}
        for principal, aliases in (links or {}).items():
            for alias in aliases:
                self.link(principal, *parse_alias(alias))
        for rule in rules:
            self.add_rule(rule if isinstance(rule, DirectoryRule) else DirectoryRule(**rule))

    # -- construction --------------------------------------------------------------------

    @classmethod
    def from_config(cls, data: Mapping[str, Any] | None, base_dir: Path | str | None = None) -> Directory:
        """Build from the ``[directory]`` table; ``file`` (relative to ``base_dir``) is
        read (``.json`` as JSON, anything else as TOML, optionally under ``[directory]``)
        and merged with the inline entries."""
        try:
            cfg = DirectoryConfig.model_validate(dict(data or {}))
        except ValidationError as exc:
            raise ConfigError(f"invalid [directory] config: {exc}") from None
        principals = {p: list(a) for p, a in cfg.principals.items()}
        rules = list(cfg.rules)
        if cfg.file:
            path = Path(cfg.file)
            if not path.is_absolute() and base_dir is not None:
                path = Path(base_dir) / path
            try:
                raw = path.read_bytes()
                loaded = json.loads(raw) if path.suffix == ".json" else tomllib.loads(raw.decode())
            except (OSError, ValueError) as exc:
                raise ConfigError(f"cannot read directory file {str(path)!r}: {exc}") from None
            loaded = loaded.get("directory", loaded)
            if "file" in loaded:
                raise ConfigError("a directory file cannot name another file")
            try:
                extra = DirectoryConfig.model_validate(loaded)
            except ValidationError as exc:
                raise ConfigError(f"invalid directory file {str(path)!r}: {exc}") from None
            for p, a in extra.principals.items():
                principals.setdefault(p, []).extend(a)
            rules.extend(extra.rules)
        return cls(principals, rules, case_insensitive=cfg.case_insensitive, sources=cfg.sources)

    # -- changes ----------------------------------------------------------------------

    def _key(self, system: str, actor_id: str) -> tuple[str, str]:
        return (system, actor_id.casefold() if system in self._ci else actor_id)

    def link(self, principal: str, system: str, actor_id: str) -> None:
        """Link ``system:actor_id`` to ``principal`` (idempotent; conflicting links fail)."""
        if not principal or not system or not actor_id:
            raise ConfigError("principal, system and actor id must be non-empty")
        key = self._key(system, actor_id)
        with self._lock:
            current = self._links.get(key)
            if current is not None and current != principal:
                raise ConfigError(f"alias {system}:{actor_id} already linked to {current!r}")
            if current is None:
                self._links[key] = principal
                self._by_principal.setdefault(principal, []).append((system, actor_id))
            self._cache = {}

    def unlink(self, system: str, actor_id: str) -> None:
        key = self._key(system, actor_id)
        with self._lock:
            principal = self._links.pop(key, None)
            if principal is not None:
                self._by_principal[principal] = [a for a in self._by_principal[principal] if self._key(*a) != key]
            self._cache = {}

    def add_rule(self, rule: DirectoryRule) -> None:
        pattern = Pattern(rule.pattern)
        unknown = _template_names(rule.principal) - set(pattern.names)
        if unknown:
            raise ConfigError(
                f"rule {rule.pattern!r}: principal template uses {sorted(unknown)} which the pattern does not capture"
            )
        compiled = _CompiledRule(rule.system, pattern, rule.principal, rule.lower, _invert_template(rule.principal))
        with self._lock:
            self._rules.append(compiled)
            self._cache = {}

    # -- queries ----------------------------------------------------------------------

    def resolve(self, system: str, actor_id: str) -> str | None:
        """The principal of ``system:actor_id``, or ``None`` when nothing links it."""
        key = self._key(system, actor_id)
        cache = self._cache
        try:
            return cache[key]
        except KeyError:
            pass
        principal = self._links.get(key)
        if principal is None:
            for rule in self._rules:
                if rule.system != system:
                    continue
                caps = rule.pattern.match(actor_id)
                if caps is not None:
                    principal = render_template(rule.principal, caps)
                    if rule.lower:
                        principal = principal.lower()
                    break
        if len(cache) >= _CACHE_LIMIT:
            cache.clear()
        cache[key] = principal
        return principal

    def resolve_alias(self, alias: str) -> str | None:
        """:meth:`resolve` for ``"system:actor_id"``."""
        return self.resolve(*parse_alias(alias))

    def system_for(self, kind: str, service: str | None = None) -> str:
        """Alias namespace for events of ``source.kind`` from ``service``."""
        return system_for_source(kind, service, self._sources)

    def resolve_source(self, kind: str, actor_id: str, service: str | None = None) -> str | None:
        """Resolve an event actor by its source kind (``cloudtrail`` → ``aws`` ...)."""
        return self.resolve(self.system_for(kind, service), actor_id)

    def is_case_insensitive(self, system: str) -> bool:
        """Whether ids of ``system`` compare case-insensitively (GitHub logins ...)."""
        return system in self._ci

    def aliases(self, principal: str) -> list[tuple[str, str]]:
        """Exact ``(system, actor_id)`` links of ``principal`` (for query expansion)."""
        return list(self._by_principal.get(principal, ()))

    def alias_patterns(self, principal: str) -> list[tuple[str, str]]:
        """``(system, glob)`` pairs of the rules that can produce ``principal``.

        E.g. rule ``arn:aws:sts::*:assumed-role/*/{name}`` → ``{name}@corp.example``
        gives ``("aws", "arn:aws:sts::*:assumed-role/*/alice")`` for
        ``alice@corp.example``; the query layer matches actor ids with it (``*``
        meaning any run of characters) to find events resolved by no link.
        """
        out: list[tuple[str, str]] = []
        for rule in self._rules:
            m = rule.inverse.fullmatch(principal)
            if m is None:
                continue
            out.append((rule.system, rule.pattern.glob(m.groupdict())))
        return out

    def principals(self) -> list[str]:
        return sorted(self._by_principal)
