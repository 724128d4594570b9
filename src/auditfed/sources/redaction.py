"""Redaction of secrets from events before they are hashed into the log.

Rules are addressed by JSON path (a subset of RFC 9535 JSONPath): ``$`` the event,
``.name`` or ``['name']`` a member, ``*`` / ``[*]`` every member or element, ``..``
recursive descent (any depth), and ``~regex`` / ``[~'regex']`` a member whose name fully
matches the regex (case-insensitive; RE2 syntax, see :mod:`auditfed.safe_regex`: member
names are the producers', so the regex must not backtrack). A rule may carry a ``when`` condition: a map of
path -> required value (``{"$.original.objectRef.resource": "secrets"}``).

Actions: ``drop`` removes the value; ``mask`` replaces it with ``"[redacted]"``;
``hash`` replaces it with ``"[redacted:hmac-sha256:<hex>]"``, the HMAC-SHA256 (RFC 2104)
of the value under the log's secret salt, so two redacted values can still be compared
for equality by anyone holding the event, but not reversed or brute-forced without the
salt. Strings are hashed as their UTF-8 bytes, other values as their RFC 8785 bytes.

Defaults (:data:`DEFAULT_RULES`): Kubernetes Secret ``data`` / ``stringData`` (and the
``last-applied-configuration`` annotation) in request and response objects of events on
``secrets``, and every operation's ``value`` of a JSON patch (RFC 6902) of a Secret;
``Authorization``, ``Proxy-Authorization``, ``Cookie``, ``Set-Cookie`` and ``X-Api-Key``
anywhere; scalar values (and arrays of scalars) under password-like keys (password,
secret, token, jwt, api_key, private_key, client_secret, session_token, ... — see
:func:`is_secret_key`: ``password_hash``, ``private_key_pem`` or ``secretValue`` are
secret, ``secretId``, ``token_id``, ``passwordLastUsed`` or ``password_policy`` only
name or describe one and are kept). A member name also selects the ``value`` of a
name/value pair: ``{"key": "password", "value": ...}`` (OTLP) or
``{"name": "Authorization", "value": ...}`` (header lists), in any casing.

Secrets inside text (a JWT in a message, ``PASSWORD '...'`` in SQL, URL credentials)
are found by value, whatever the rules, in :mod:`auditfed.sources.secrets`.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Literal

from auditfed.errors import ConfigError
from auditfed.event import canonical_bytes
from auditfed.safe_regex import Regex, RegexRefused, compile_regex

Action = Literal["drop", "hash", "mask"]
MASK = "[redacted]"
HASH_PREFIX = "[redacted:hmac-sha256:"

# --- paths ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Seg:
    kind: Literal["key", "any", "deep", "regex"]
    value: str = ""
    regex: Regex | None = None


_TOKEN = re.compile(
    r"""\.\.|\.|\[\s*\*\s*\]|\[\s*'((?:[^'\\]|\\.)*)'\s*\]|\[\s*"((?:[^"\\]|\\.)*)"\s*\]"""
    r"""|\[\s*~'((?:[^'\\]|\\.)*)'\s*\]|\[\s*(\d+)\s*\]"""
)


@lru_cache(maxsize=1024)
def parse_path(path: str) -> tuple[_Seg, ...]:
    """Parse the JSON path subset described in the module docstring."""
    if not path.startswith("$"):
        raise ConfigError(f"redaction path must start with '$': {path!r}")
    segs: list[_Seg] = []
    i = 1
    n = len(path)
    while i < n:
        m = _TOKEN.match(path, i)
        if not m:
            raise ConfigError(f"bad redaction path {path!r} at {i}")
        tok = m.group(0)
        i = m.end()
        if tok in (".", ".."):
            if tok == "..":
                segs.append(_Seg("deep"))
            # a bare name (or * or ~regex) follows
            j = i
            while j < n and path[j] not in ".[":
                j += 1
            name = path[i:j]
            i = j
            if not name:
                if tok == "..":
                    continue  # `..[...]`
                raise ConfigError(f"empty member name in redaction path {path!r}")
            segs.append(_name_seg(path, name))
        elif m.group(1) is not None or m.group(2) is not None:
            segs.append(_Seg("key", m.group(1) if m.group(1) is not None else m.group(2)))
        elif m.group(3) is not None:
            segs.append(_regex_seg(path, m.group(3)))
        elif m.group(4) is not None:
            segs.append(_Seg("key", m.group(4)))
        else:
            segs.append(_Seg("any"))
    return tuple(segs)


def _name_seg(path: str, name: str) -> _Seg:
    if name == "*":
        return _Seg("any")
    if name.startswith("~"):
        return _regex_seg(path, name[1:])
    return _Seg("key", name)


def _regex_seg(path: str, pattern: str) -> _Seg:
    try:
        return _Seg("regex", pattern, compile_regex(pattern, ignore_case=True))
    except RegexRefused as exc:
        raise ConfigError(f"redaction path {path!r}: {exc.detail}") from None


# --- rules ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Rule:
    """One redaction rule: what to do with the values a JSON path selects."""

    path: str
    action: Action = "hash"
    when: Mapping[str, Any] = field(default_factory=dict)
    #: Only redact scalars (strings, numbers); descend into objects and arrays.
    scalars_only: bool = False
    #: ``"secret-like"``: only members whose name looks like a credential (is_secret_key).
    keys: Literal["secret-like"] | None = None

    def __post_init__(self) -> None:
        if self.keys not in (None, "secret-like"):
            raise ConfigError(f"redaction keys filter must be 'secret-like': {self.keys!r}")
        if self.action not in ("drop", "hash", "mask"):
            raise ConfigError(f"redaction action must be drop, hash or mask: {self.action!r}")
        parse_path(self.path)
        for cond in self.when:
            parse_path(cond)

    @classmethod
    def from_dict(cls, spec: Mapping[str, Any]) -> Rule:
        """From config: ``{"path": "$...", "action": "hash", "when": {...}}``."""
        unknown = set(spec) - {"path", "action", "when", "scalars_only", "keys"}
        if unknown or "path" not in spec:
            raise ConfigError(f"a redaction rule needs 'path' (and only path/action/when): {dict(spec)}")
        return cls(
            path=spec["path"],
            action=spec.get("action", "hash"),
            when=dict(spec.get("when") or {}),
            scalars_only=bool(spec.get("scalars_only", False)),
            keys=spec.get("keys"),
        )


_SECRET_WORDS = {"password", "passwd", "passphrase", "pwd", "secret", "token", "apikey",
                 "privatekey", "authorization", "cookie", "credential", "credentials", "jwt",
                 "bearer", "otp"}
_SECRET_PAIRS = {("api", "key"), ("private", "key"), ("secret", "key"), ("access", "key"),
                 ("client", "secret"), ("secret", "access"), ("auth", "token"),
                 ("set", "cookie")}
# Secret words that make a member secret also before other words (``password_hash``,
# ``secretValue``); ``authorization`` or ``cookie`` do not (``authorization.k8s.io/decision``).
_INNER_SECRET_WORDS = {"password", "passwd", "passphrase", "secret", "token", "jwt", "apikey",
                       "privatekey", "credential", "credentials"}
# Words that, after the secret word, make the member describe a secret rather than hold
# one (``secretName``, ``token_id``, ``passwordLastUsed``, ``password_policy``): kept so
# that an auditor can still tell which secret was used or changed. Any other word keeps
# the member secret (``password_hash``, ``private_key_pem``, ``secretValue``).
_DESCRIBING_WORDS = {
    "id", "ids", "name", "names", "arn", "arns", "ref", "type", "types", "kind", "policy",
    "policies", "length", "len", "count", "age", "ttl", "expiry", "expires", "expiration",
    "expired", "created", "updated", "changed", "last", "used", "version", "versions",
    "status", "state", "required", "enabled", "reset", "rotation", "rotated", "reuse",
    "prevention", "strength", "min", "max", "minimum", "maximum", "date", "time", "at",
    "format", "path", "file", "uri", "url", "endpoint", "provider", "source", "mode",
    "algorithm", "alg", "fingerprint", "label", "hint", "set", "present", "exists",
}
_WORD_SPLIT = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])")


@lru_cache(maxsize=4096)
def is_secret_key(key: str) -> bool:
    """Does a member name look like it holds a credential?

    It does when its last word names a secret (``password``, ``token``, ``jwt``,
    ``cookie``, ... or a pair such as ``private key``; camelCase, snake_case or
    kebab-case), or an earlier word does (:data:`_INNER_SECRET_WORDS`) and no word after
    it says the member only describes one (:data:`_DESCRIBING_WORDS`).
    """
    words = [w.lower() for w in _WORD_SPLIT.findall(key)]
    if not words:
        return False
    if words[-1] in _SECRET_WORDS or (len(words) >= 2 and (words[-2], words[-1]) in _SECRET_PAIRS):
        return True
    for i in range(len(words) - 2, -1, -1):
        if words[i] in _INNER_SECRET_WORDS or (i and (words[i - 1], words[i]) in _SECRET_PAIRS):
            return not any(w in _DESCRIBING_WORDS for w in words[i + 1:])
    return False


_K8S_SECRET = {"$.original.objectRef.resource": "secrets"}
_LAST_APPLIED = "['kubectl.kubernetes.io/last-applied-configuration']"

DEFAULT_RULES: tuple[Rule, ...] = (
    *(
        Rule(f"$.original.{obj}.{part}.*", "hash", _K8S_SECRET)
        for obj in ("requestObject", "responseObject")
        for part in ("data", "stringData")
    ),
    *(
        Rule(f"$.original.{obj}.items[*].{part}.*", "hash", _K8S_SECRET)
        for obj in ("requestObject", "responseObject")
        for part in ("data", "stringData")
    ),
    *(
        Rule(f"$.original.{obj}.metadata.annotations{_LAST_APPLIED}", "hash", _K8S_SECRET)
        for obj in ("requestObject", "responseObject")
    ),
    # a JSON patch (RFC 6902) of a Secret: every operation's value (`/data/k`, `/data`, ...)
    Rule("$.original.requestObject[*].value", "hash", _K8S_SECRET),
    Rule("$..[~'(proxy-)?authorization|cookie|set-cookie|x-api-key']", "hash"),
    Rule("$..*", "hash", scalars_only=True, keys="secret-like"),
)


# --- the redactor --------------------------------------------------------------------


class Redactor:
    """Apply redaction rules to whole events (``original`` and ``attributes`` included).

    ``rules=None`` uses :data:`DEFAULT_RULES`; pass ``[*DEFAULT_RULES, *mine]`` to extend
    them. ``salt`` is the per-log secret key of the ``hash`` action.

    Cost: redaction runs on every ingested event, so the rules are compiled once into
    what a quick look at an event can rule out. Path rules are skipped when the event
    lacks their first member (``$.original...`` on an event without ``original``) and
    their ``when`` conditions are read with plain lookups, once per event. The
    ``$..member`` rules run together in one walk over the free-form members
    ``original`` and ``attributes`` only: an event (as every ingest enricher gets it,
    validated) holds nothing but the schema's member names in its fixed parts
    (``actor``, ``source``, ...), and those a rule could select are known up front —
    with the defaults only ``actor.token`` (a presented JWT, normally consumed by the
    identity stage already) — so the whole event is walked only when it holds one.
    An event that holds nothing a rule can select costs about a microsecond.
    """

    def __init__(self, rules: Iterable[Rule | Mapping[str, Any]] | None, salt: bytes) -> None:
        if not isinstance(salt, bytes | bytearray) or len(salt) < 16:
            raise ConfigError("the redaction salt must be at least 16 random bytes")
        self.salt = bytes(salt)
        chosen = DEFAULT_RULES if rules is None else tuple(rules)
        self.rules = tuple(r if isinstance(r, Rule) else Rule.from_dict(r) for r in chosen)
        # every distinct `when` condition, evaluated at most once per event
        conditions: dict[tuple[str, Any], int] = {}

        def condition_ids(rule: Rule) -> tuple[int, ...]:
            ids = []
            for path, expected in rule.when.items():
                key = (path, _hashable(expected))
                if key not in conditions:
                    conditions[key] = len(conditions)
                    self._conditions.append((parse_path(path), expected))
                ids.append(conditions[key])
            return tuple(ids)

        self._conditions: list[tuple[tuple[_Seg, ...], Any]] = []
        compiled = [(rule, parse_path(rule.path), condition_ids(rule)) for rule in self.rules]
        # `$..<member>` rules run together in one pass over the event; others path by path
        self._deep = [c for c in compiled if len(c[1]) == 2 and c[1][0].kind == "deep"
                      and c[1][1].kind in ("key", "regex", "any")]
        #: (rule, segments, condition ids, first member the path needs or None)
        self._paths = [
            (rule, segs, conds, segs[0].value if segs and segs[0].kind == "key" else None)
            for rule, segs, conds in compiled if (rule, segs, conds) not in self._deep
        ]
        # the path rules' first members, when every path rule names one: an event with
        # none of them skips all path rules at once
        firsts = [first for _r, _s, _c, first in self._paths]
        self._path_firsts = tuple(dict.fromkeys(firsts)) if None not in firsts else None
        self._all_deep = frozenset(range(len(self._deep)))
        self._deep_unconditional = all(not conds for _r, _s, conds in self._deep)
        #: per set of active deep rules: member name -> the rules that select it
        self._tables: dict[frozenset[int], dict[str, tuple[Rule, ...]]] = {}
        # Member names of the schema's fixed parts that no deep rule selects: when the
        # fixed parts hold only those, the walk may skip them (e.g. the secret-like-key
        # rule selects ``actor.token``, so an actor with a token is walked).
        self._risky = tuple(
            (part, name) for part, names in _PARTS.items() for name in sorted(names)
            if self._rules_for(name, self._all_deep)
        )

    def digest(self, value: Any) -> str:
        """The keyed digest a ``hash`` rule leaves in place of ``value``."""
        raw = value.encode() if isinstance(value, str) else canonical_bytes(value)
        return HASH_PREFIX + hmac.new(self.salt, raw, hashlib.sha256).hexdigest() + "]"

    def apply(self, event: dict[str, Any]) -> dict[str, Any]:
        """Return the event with every selected value redacted (the input is not changed)."""
        out = event
        known: dict[int, bool] = {}
        firsts = self._path_firsts
        if self._paths and (firsts is None or any(name in out for name in firsts)):
            for rule, segs, conds, first in self._paths:
                if first is not None and first not in out:
                    continue
                if conds and not self._holds(out, conds, known):
                    continue
                out = self._walk(out, segs, rule, rule.keys == "secret-like")
        if not self._deep:
            return out
        if self._deep_unconditional:
            active = self._all_deep
        else:
            active = frozenset(i for i, (_r, _s, conds) in enumerate(self._deep)
                               if not conds or self._holds(out, conds, known))
            if not active:
                return out
        table = self._tables.get(active)
        if table is None:
            table = self._tables[active] = {}
        if type(out) is dict and not (self._risky and _holds_any(out, self._risky)):
            # only the free-form members can hold a member a deep rule selects
            result = None
            for name in _FREE:
                value = out.get(name)
                if value:
                    new = self._deep_pass(value, active, table)
                    if new is not value:
                        result = result if result is not None else dict(out)
                        result[name] = new
            return out if result is None else result
        return self._deep_pass(out, active, table)

    def _holds(self, event: Any, conds: tuple[int, ...], known: dict[int, bool]) -> bool:
        for cid in conds:
            got = known.get(cid)
            if got is None:
                segs, expected = self._conditions[cid]
                got = known[cid] = _matches(event, segs, expected)
            if not got:
                return False
        return True

    def _rules_for(self, key: str, active: frozenset[int]) -> tuple[Rule, ...]:
        """The active deep rules whose member matcher selects ``key``, in rule order."""
        return tuple(
            rule for i, (rule, segs, _c) in enumerate(self._deep)
            if i in active and _seg_matches(segs[1], key)
            and (rule.keys != "secret-like" or is_secret_key(key))
        )

    def _lookup(self, key: str, active: frozenset[int], table: dict[str, tuple[Rule, ...]]
                ) -> tuple[Rule, ...]:
        found = self._rules_for(key, active)
        if len(table) < 65536:
            table[key] = found
        return found

    @staticmethod
    def _pick(rules: tuple[Rule, ...], value: Any) -> Rule | None:
        for rule in rules:
            if value is None or (rule.scalars_only and isinstance(value, dict | list)
                                 and not _scalar_list(value)):
                continue
            return rule
        return None

    def _deep_pass(self, node: Any, active: frozenset[int], table: dict[str, tuple[Rule, ...]]
                   ) -> Any:
        """Apply the ``$..member`` rules at every depth; copy only what changes."""
        if isinstance(node, dict):
            pair = _name_value_pair(node) if len(node) <= 3 else None
            if pair is not None:
                # {"key": "password", "value": {"stringValue": ...}} (OTLP) or
                # {"name": "Authorization", "value": "Bearer ..."} (header lists, any casing)
                kv_key, value_member = pair
                rules = table.get(kv_key)
                if rules is None:
                    rules = self._lookup(kv_key, active, table)
                rule = self._pick(rules, "") if rules else None
                if rule is not None and node[value_member] is not None:
                    return self._kv_replace(node, rule, value_member)
            result: dict[str, Any] | None = None
            for key, value in node.items():
                rules = table.get(key)
                if rules is None:
                    rules = self._lookup(key, active, table)
                rule = self._pick(rules, value) if rules else None
                if rule is not None:
                    result = result if result is not None else dict(node)
                    if rule.action == "drop":
                        del result[key]
                    elif isinstance(value, list):  # scalars (OTLP's header arrays)
                        result[key] = [v if v is None else self._replace(v, rule) for v in value]
                    else:
                        result[key] = self._replace(value, rule)
                elif value and isinstance(value, _CONTAINERS):
                    new = self._deep_pass(value, active, table)
                    if new is not value:
                        result = result if result is not None else dict(node)
                        result[key] = new
            return node if result is None else result
        if isinstance(node, list):
            new_list: list[Any] | None = None
            for i, value in enumerate(node):
                if value and isinstance(value, _CONTAINERS):
                    new = self._deep_pass(value, active, table)
                    if new is not value:
                        new_list = new_list if new_list is not None else list(node)
                        new_list[i] = new
            return node if new_list is None else new_list
        return node

    def _kv_replace(self, node: dict[str, Any], rule: Rule, member: str) -> dict[str, Any]:
        if rule.action == "drop":
            return {k: v for k, v in node.items() if k != member}
        value = node[member]
        if isinstance(value, dict) and len(value) == 1:
            ((kind, inner),) = value.items()
            if isinstance(inner, dict | list) or kind != "stringValue":
                kind = "stringValue"
            replaced: Any = {kind: self._replace(inner, rule)}
        else:
            replaced = self._replace(value, rule)
        return {**node, member: replaced}

    def _replace(self, value: Any, rule: Rule) -> Any:
        if rule.action == "mask":
            return MASK
        if isinstance(value, str) and value.startswith(HASH_PREFIX):
            return value  # already redacted
        return self.digest(value)

    def _walk(self, node: Any, segs: tuple[_Seg, ...], rule: Rule, key_filter: bool) -> Any:
        """Return ``node`` with the rule applied below it; copies only what changes."""
        if not segs:
            return node
        seg, rest = segs[0], segs[1:]
        if seg.kind == "deep":
            # match `rest` here, and at every depth below
            node = self._walk(node, rest, rule, key_filter)
            if isinstance(node, dict):
                changed = {k: self._walk(v, segs, rule, key_filter) for k, v in node.items()}
                if any(changed[k] is not node[k] for k in node):
                    return changed
            elif isinstance(node, list):
                changed_list = [self._walk(v, segs, rule, key_filter) for v in node]
                if any(a is not b for a, b in zip(changed_list, node, strict=True)):
                    return changed_list
            return node
        if isinstance(node, dict):
            result: dict[str, Any] | None = None
            for key, value in node.items():
                if not _seg_matches(seg, key):
                    continue
                if key_filter and not is_secret_key(key):
                    continue
                if rest:
                    new = self._walk(value, rest, rule, key_filter)
                    if new is value:
                        continue
                    result = result if result is not None else dict(node)
                    result[key] = new
                    continue
                if rule.scalars_only and isinstance(value, dict | list):
                    continue
                if value is None:
                    continue
                result = result if result is not None else dict(node)
                if rule.action == "drop":
                    del result[key]
                else:
                    result[key] = self._replace(value, rule)
            return node if result is None else result
        if isinstance(node, list):
            if seg.kind not in ("any", "key"):
                return node
            indices = range(len(node)) if seg.kind == "any" else (
                [int(seg.value)] if seg.value.isdigit() and int(seg.value) < len(node) else [])
            new_list: list[Any] | None = None
            drop: set[int] = set()
            for i in indices:
                value = node[i]
                if rest:
                    new = self._walk(value, rest, rule, key_filter)
                    if new is not value:
                        new_list = new_list if new_list is not None else list(node)
                        new_list[i] = new
                elif rule.action == "drop":
                    drop.add(i)
                elif not (rule.scalars_only and isinstance(value, dict | list)):
                    new_list = new_list if new_list is not None else list(node)
                    new_list[i] = self._replace(value, rule)
            if drop:
                base = new_list if new_list is not None else node
                return [v for i, v in enumerate(base) if i not in drop]
            return node if new_list is None else new_list
        return node



_PAIR_NAMES = frozenset({"key", "name"})


def _name_value_pair(node: dict[str, Any]) -> tuple[str, str] | None:
    """``(name, value member)`` of a ``{"name"|"key": str, "value": ...}`` pair (any casing)."""
    name = value_member = None
    for member, value in node.items():
        lowered = member.lower()
        if lowered in _PAIR_NAMES and isinstance(value, str):
            name = value
        elif lowered == "value":
            value_member = member
    return None if name is None or value_member is None else (name, value_member)


def _scalar_list(value: Any) -> bool:
    return isinstance(value, list) and not any(isinstance(v, dict | list) for v in value)


def _hashable(value: Any) -> Any:
    return value if isinstance(value, str | int | float | bool) or value is None else repr(value)


def _schema_parts() -> tuple[dict[str, frozenset[str]], frozenset[str]]:
    """Member names of the event's fixed parts (from the event model), per part."""
    from auditfed.event.model import Actor, Delegate, EventInput, Policy, Resource, Source, Trace

    def names(cls: Any) -> frozenset[str]:
        return frozenset(cls.__required_keys__ | cls.__optional_keys__)

    parts = {"": names(EventInput), "actor": names(Actor), "chain": names(Delegate),
             "resource": names(Resource), "source": names(Source), "trace": names(Trace),
             "policy": names(Policy)}
    return parts, frozenset().union(*parts.values())


_PARTS, _SCHEMA_NAMES = _schema_parts()
_FREE = ("original", "attributes")
_CONTAINERS = (dict, list)


def _holds_any(event: dict[str, Any], names: tuple[tuple[str, str], ...]) -> bool:
    """Does the event hold any of ``(part, member name)`` in its fixed parts?"""
    actor = event.get("actor")
    for part, name in names:
        if part == "":
            if name in event:
                return True
        elif part == "chain":
            chain = actor.get("chain") if isinstance(actor, dict) else None
            if isinstance(chain, list) and any(isinstance(link, dict) and name in link
                                               for link in chain):
                return True
        else:
            value = actor if part == "actor" else event.get(part)
            if isinstance(value, dict) and name in value:
                return True
    return False


def _seg_matches(seg: _Seg, key: str) -> bool:
    if seg.kind == "any":
        return True
    if seg.kind == "key":
        return key == seg.value
    if seg.kind == "regex":
        assert seg.regex is not None
        return seg.regex.fullmatch(key) is not None
    return False


def _matches(event: Any, segs: tuple[_Seg, ...], expected: Any) -> bool:
    """Does any value the (simple) path selects equal ``expected``?"""
    nodes = [event]
    for seg in segs:
        nxt: list[Any] = []
        for node in nodes:
            if isinstance(node, dict):
                if seg.kind == "key":
                    if seg.value in node:
                        nxt.append(node[seg.value])
                else:
                    nxt.extend(v for k, v in node.items() if _seg_matches(seg, k))
            elif isinstance(node, list) and seg.kind == "any":
                nxt.extend(node)
        nodes = nxt
    return any(node == expected for node in nodes)
