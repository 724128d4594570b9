"""Redaction of secrets from events before they are hashed into the log.

Rules are addressed by JSON path (a subset of RFC 9535 JSONPath): ``$`` the event,
``.name`` or ``['name']`` a member, ``*`` / ``[*]`` every member or element, ``..``
recursive descent (any depth), and ``~regex`` / ``[~'regex']`` a member whose name fully
matches the regex (case-insensitive). A rule may carry a ``when`` condition: a map of
path -> required value (``{"$.original.objectRef.resource": "secrets"}``).

Actions: ``drop`` removes the value; ``mask`` replaces it with ``"[redacted]"``;
``hash`` replaces it with ``"[redacted:hmac-sha256:<hex>]"``, the HMAC-SHA256 (RFC 2104)
of the value under the log's secret salt, so two redacted values can still be compared
for equality by anyone holding the event, but not reversed or brute-forced without the
salt. Strings are hashed as their UTF-8 bytes, other values as their RFC 8785 bytes.

Defaults (:data:`DEFAULT_RULES`): Kubernetes Secret ``data`` / ``stringData`` (and the
``last-applied-configuration`` annotation) in request and response objects of events on
``secrets``; ``Authorization`` and ``Proxy-Authorization`` headers and ``Cookie``
anywhere; scalar values under password-like keys (password, passwd, secret, token,
api_key, private_key, client_secret, session_token, ... — matched on the key's last
word, case-insensitive, so ``secretId`` or ``token_id`` names are kept).
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

Action = Literal["drop", "hash", "mask"]
MASK = "[redacted]"
HASH_PREFIX = "[redacted:hmac-sha256:"

# --- paths ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Seg:
    kind: Literal["key", "any", "deep", "regex"]
    value: str = ""
    regex: re.Pattern[str] | None = None


_TOKEN = re.compile(
    r"""\.\.|\.|\[\s*\*\s*\]|\[\s*'((?:[^'\\]|\\.)*)'\s*\]|\[\s*"((?:[^"\\]|\\.)*)"\s*\]"""
    r"""|\[\s*~'((?:[^'\\]|\\.)*)'\s*\]|\[\s*(\d+)\s*\]"""
)


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
            segs.append(_name_seg(name))
        elif m.group(1) is not None or m.group(2) is not None:
            segs.append(_Seg("key", m.group(1) if m.group(1) is not None else m.group(2)))
        elif m.group(3) is not None:
            segs.append(_Seg("regex", m.group(3), re.compile(m.group(3), re.IGNORECASE)))
        elif m.group(4) is not None:
            segs.append(_Seg("key", m.group(4)))
        else:
            segs.append(_Seg("any"))
    return tuple(segs)


def _name_seg(name: str) -> _Seg:
    if name == "*":
        return _Seg("any")
    if name.startswith("~"):
        return _Seg("regex", name[1:], re.compile(name[1:], re.IGNORECASE))
    return _Seg("key", name)


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
                 "privatekey", "authorization", "cookie", "credential", "credentials"}
_SECRET_PAIRS = {("api", "key"), ("private", "key"), ("secret", "key"), ("access", "key"),
                 ("client", "secret"), ("secret", "access"), ("auth", "token"),
                 ("set", "cookie")}
_WORD_SPLIT = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])")


@lru_cache(maxsize=4096)
def is_secret_key(key: str) -> bool:
    """Does a member name look like it holds a credential? (Matched on its last word.)"""
    words = [w.lower() for w in _WORD_SPLIT.findall(key)]
    if not words:
        return False
    if words[-1] in _SECRET_WORDS:
        return True
    return len(words) >= 2 and (words[-2], words[-1]) in _SECRET_PAIRS


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
    Rule("$..[~'(proxy-)?authorization|cookie|set-cookie|x-api-key']", "hash"),
    Rule("$..*", "hash", scalars_only=True, keys="secret-like"),
)


# --- the redactor --------------------------------------------------------------------


class Redactor:
    """Apply redaction rules to whole events (``original`` and ``attributes`` included).

    ``rules=None`` uses :data:`DEFAULT_RULES`; pass ``[*DEFAULT_RULES, *mine]`` to extend
    them. ``salt`` is the per-log secret key of the ``hash`` action.
    """

    def __init__(self, rules: Iterable[Rule | Mapping[str, Any]] | None, salt: bytes) -> None:
        if not isinstance(salt, bytes | bytearray) or len(salt) < 16:
            raise ConfigError("the redaction salt must be at least 16 random bytes")
        self.salt = bytes(salt)
        chosen = DEFAULT_RULES if rules is None else tuple(rules)
        self.rules = tuple(r if isinstance(r, Rule) else Rule.from_dict(r) for r in chosen)
        self._compiled = [
            (rule, parse_path(rule.path), [(parse_path(p), v) for p, v in rule.when.items()])
            for rule in self.rules
        ]

    def digest(self, value: Any) -> str:
        """The keyed digest a ``hash`` rule leaves in place of ``value``."""
        raw = value.encode() if isinstance(value, str) else canonical_bytes(value)
        return HASH_PREFIX + hmac.new(self.salt, raw, hashlib.sha256).hexdigest() + "]"

    def apply(self, event: dict[str, Any]) -> dict[str, Any]:
        """Return the event with every selected value redacted (the input is not changed)."""
        out = event
        for rule, segs, conds in self._compiled:
            if conds and not all(_matches(out, p, v) for p, v in conds):
                continue
            key_filter = rule.keys == "secret-like"
            out = self._walk(out, segs, rule, key_filter)
            if key_filter:
                out = self._key_value_lists(out, rule)
        return out

    def _key_value_lists(self, node: Any, rule: Rule) -> Any:
        """OTLP-style ``[{"key": "password", "value": {...}}]`` lists: redact the value."""
        if isinstance(node, list):
            new = [self._key_value_lists(v, rule) for v in node]
            return new if any(a is not b for a, b in zip(new, node, strict=True)) else node
        if not isinstance(node, dict):
            return node
        key = node.get("key")
        if isinstance(key, str) and "value" in node and len(node) <= 3 and is_secret_key(key):
            value = node["value"]
            if value is None:
                return node
            if isinstance(value, dict) and len(value) == 1:
                (kind, inner), = value.items()
                if isinstance(inner, dict | list):
                    replaced: Any = {"stringValue": self._replace(inner, rule)}
                else:
                    replaced = {kind if kind == "stringValue" else "stringValue":
                                self._replace(inner, rule)}
            else:
                replaced = self._replace(value, rule)
            if rule.action == "drop":
                return {k: v for k, v in node.items() if k != "value"}
            return {**node, "value": replaced}
        changed = {k: self._key_value_lists(v, rule) for k, v in node.items()}
        return changed if any(changed[k] is not node[k] for k in node) else node

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
                nxt.extend(v for k, v in node.items() if _seg_matches(seg, k))
            elif isinstance(node, list) and seg.kind == "any":
                nxt.extend(node)
        nodes = nxt
    return any(node == expected for node in nodes)
