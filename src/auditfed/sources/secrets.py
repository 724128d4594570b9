"""Secrets recognised by their value, in any string of an event: replaced by ``[REDACTED:<kind>]``.

Key-based rules (:mod:`auditfed.sources.redaction`) catch a secret stored under a telling
member name; this module catches the ones that hide inside text: a JWT in a log message,
``ALTER ROLE app PASSWORD '...'`` in a pgaudit statement or an OTLP ``db.statement``,
``https://user:pass@host`` or ``?access_token=...`` in a URL, a PEM private key, an AWS,
GitHub, Slack, Stripe, Google... token anywhere. Only the secret part of a match is
replaced (``PASSWORD [REDACTED:password]``, ``https://bob:[REDACTED:url-password]@host``),
so the statement or URL stays readable and an auditor sees that something was there and
what kind it was.

The token shapes follow Yelp's ``detect-secrets`` plugins (Apache-2.0; aws, github_token,
slack, stripe, jwt, private_key, gitlab_token, openai, sendgrid, npm, pypi_token,
azure_storage_key, basic_auth). That package is not used as a library: it scans files
line by line through per-plugin Python ``re`` patterns (some with ``.+``/nested
quantifiers that backtrack on hostile input), reports secrets rather than their spans,
and costs milliseconds per line; redaction runs on every ingested event.

Every pattern here runs on RE2 (linear time, no backtracking, whatever the input), all
of them compiled into one alternation, so a string is scanned once. The common case
costs one scan of the event's canonical JSON bytes (made anyway, for the leaf) by
:data:`_TRIGGER`, a superset of every detector written to survive JSON escaping; only
an event that holds a trigger has its strings scanned one by one.
"""

from __future__ import annotations

from bisect import bisect_right
from itertools import accumulate
from typing import Any, NamedTuple

import re2

MARKER = "[REDACTED:{}]"


class Detector(NamedTuple):
    r"""One secret shape: its kind and a regex; its ``(?P<s>...)`` group, if any, is the secret part.

    ``trigger``: what the regex needs, written for the event's JSON bytes, where a quote
    is ``\"``, a newline ``\n``, and a word boundary may fall inside an escape. Without
    one, the pattern itself (minus ``\b``) is used: it holds no quote or whitespace.
    """

    kind: str
    pattern: str
    trigger: str | None = None


# Between a keyword and its value: `=`, `: ` (a colon needs a space or a quote before
# it, so `arn:aws:secretsmanager:...:secret:name` is not a `secret: value` pair).
_SEP = r"""(?:\s*=\s*|["']\s*[:=]\s*["']?|\s*:\s+["']?)"""
# The same in JSON bytes; a quoted value already redacted (`"password":"[redacted:..."`,
# what a key rule leaves) or empty is no trigger.
_W = r"(?:\s|\\[nrtf])"
_Q = r"""\\?["']"""
_SEP_JSON = rf"""(?:{_W}*={_W}*|{_Q}{_W}*[:=]{_W}*(?:{_Q})?(?:[^\[\\"]|\[[^rR])|{_W}*:{_W}+)"""
_QUERY_NAMES = (
    "access_token|id_token|refresh_token|token|api_key|apikey|api-key|key|sig|signature"
    "|x-amz-signature|x-amz-security-token|x-goog-signature|client_secret|password|passwd"
    "|pwd|secret|code|auth|jwt|session|sessionid"
)
_PRIVATE_KEY_LINE = r"-----BEGIN[ A-Z0-9]*PRIVATE KEY(?: BLOCK)?-----"
_PASSWORD_WORDS = r"(?i:\b(?:password|passwd|passphrase))"
_SECRET_WORDS = (r"(?i:\b(?:secret|client_secret|api[_-]?key|apikey|access[_-]?token|auth[_-]?token"
                 r"|refresh[_-]?token|token|private[_-]?key))")
_AWS_SECRET_NAME = r"(?i:(?:aws)?[_-]?secret[_-]?(?:access)?[_-]?key)"
_AWS_KEY_ID = r"(?:A3T[A-Z0-9]|ABIA|ACCA|AKIA|ASIA)[A-Z0-9]{16}"

#: Detectors in priority order (at one position, the first that matches wins).
DETECTORS: tuple[Detector, ...] = (
    Detector("private-key", _PRIVATE_KEY_LINE
             + r"(?s:.*?)(?:-----END[ A-Z0-9]*PRIVATE KEY(?: BLOCK)?-----|$)", _PRIVATE_KEY_LINE),
    Detector("private-key", r"PuTTY-User-Key-File-[0-9]+:(?s:.*)", "PuTTY-User-Key-File-"),
    Detector("jwt", r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*"),
    # an id standing alone as a member's whole value is kept (:func:`redact_text`): the
    # trigger is an id with anything but a JSON string's quotes around it
    Detector("aws-access-key", rf"\b{_AWS_KEY_ID}\b",
             rf"""(?:[^"]|[^:]"|[^"]:"){_AWS_KEY_ID}|{_AWS_KEY_ID}[^"]"""),
    Detector("aws-secret-key", _AWS_SECRET_NAME + r"[\s\"':=]{1,5}(?P<s>[A-Za-z0-9/+]{40})",
             _AWS_SECRET_NAME + r"""(?:[\s"':=]|\\["nrtf]){1,5}[A-Za-z0-9/+]{40}"""),
    Detector("github-token", r"\b(?:ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9_]{36,}"),
    Detector("github-token", r"\bgithub_pat_[A-Za-z0-9_]{22,}"),
    Detector("gitlab-token", r"\b(?:glpat|gldt|glft|glsoat|glrt|glcbt|glimt|glptt|glagent|gloas)"
                             r"-[A-Za-z0-9_-]{20,}"),
    Detector("slack-token", r"\bxox[abposre]-[A-Za-z0-9-]{10,}"),
    Detector("slack-webhook", r"hooks\.slack\.com/services/(?P<s>[A-Za-z0-9_/]{10,})"),
    Detector("stripe-key", r"\b[rs]k_(?:live|test)_[A-Za-z0-9]{16,}"),
    Detector("google-api-key", r"\bAIza[A-Za-z0-9_-]{35}"),
    Detector("google-oauth-secret", r"\bGOCSPX-[A-Za-z0-9_-]{28}"),
    Detector("openai-key", r"\bsk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,}T3BlbkFJ[A-Za-z0-9_-]{20,}"),
    Detector("anthropic-key", r"\bsk-ant-[A-Za-z0-9_-]{32,}"),
    Detector("sendgrid-key", r"\bSG\.[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43}"),
    Detector("npm-token", r"\bnpm_[A-Za-z0-9]{36}"),
    Detector("pypi-token", r"\bpypi-AgE[A-Za-z0-9_-]{50,}"),
    Detector("azure-storage-key", r"AccountKey=(?P<s>[A-Za-z0-9+/=]{40,})"),
    # SQL: PASSWORD 'x' / ENCRYPTED PASSWORD 'x' / IDENTIFIED BY 'x' / PASSWORD('x') /
    # OPTIONS (password 'x'); standard, E'' and dollar-quoted literals, also unterminated.
    Detector("password", r"(?i:\b(?:password|identified\s+by))(?:\s|/\*[^*]*\*/|=|\()*"
                         r"(?P<s>[Ee]'(?:[^'\\]|\\.|'')*(?:'|$)|'(?:[^']|'')*(?:'|$)"
                         r"|\$[A-Za-z_]*\$[^$]*(?:\$[A-Za-z_]*\$|$))",
             rf"(?i:password|identified{_W}+by)(?:{_W}|/\*[^*]*\*/|=|\()*(?:[Ee]?'|\$)"),
    Detector("url-password", r"(?i:\b[a-z][a-z0-9+.-]*://)[^/\s:@\[\"'<>]*:(?P<s>[^/\s@\"'<>]+)@"),
    Detector("url-secret", r"(?i:[?&;#](?:" + _QUERY_NAMES + r")=)(?P<s>[^&#\s\"'<>]+)",
             r"(?i:[?&;#](?:" + _QUERY_NAMES + r")=)"),
    Detector("authorization", r"(?i:\b(?:proxy-)?authorization)" + _SEP
                              + r"(?P<s>(?:[A-Za-z0-9-]+\s+)?[^\s,;\"'<>]+)",
             r"(?i:authorization)" + _SEP_JSON),
    Detector("cookie", r"(?i:\b(?:set-)?cookie)" + _SEP + r"(?P<s>[^\r\n\"']+)", r"(?i:cookie)" + _SEP_JSON),
    Detector("bearer-token", r"(?i:\bbearer\s+)(?P<s>[A-Za-z0-9._~+/-]{16,}=*)",
             rf"(?i:bearer){_W}+[A-Za-z0-9._~+/-]{{16}}"),
    Detector("password", _PASSWORD_WORDS + _SEP + r"(?P<s>[^\s&;,\"'<>]+)",
             _PASSWORD_WORDS.replace(r"\b", "") + _SEP_JSON),
    Detector("secret", _SECRET_WORDS + _SEP + r"(?P<s>[^\s&;,\"'<>]+)",
             _SECRET_WORDS.replace(r"\b", "") + _SEP_JSON),
)


def _combined(detectors: tuple[Detector, ...]) -> tuple[Any, list[tuple[str, int, int]]]:
    """One RE2 alternation; per detector: kind, index of its whole group, of its secret group."""
    parts = [f"(?P<d{i}>{det.pattern.replace('(?P<s>', f'(?P<s{i}>')})" for i, det in enumerate(detectors)]
    pattern = re2.compile("|".join(parts).encode())
    index = {name.decode() if isinstance(name, bytes) else name: n for name, n in pattern.groupindex.items()}
    groups = [(det.kind, index[f"d{i}"], index.get(f"s{i}", index[f"d{i}"]))
              for i, det in enumerate(detectors)]
    return pattern, groups


_PATTERN, _GROUPS = _combined(DETECTORS)
# The same without capture groups: RE2 answers "is there a match" from its DFA, much
# faster than a search that must report groups. (All patterns run on UTF-8 bytes: the
# RE2 binding maps every offset of a str between characters and bytes, at a cost.)
_ANY = re2.compile("|".join(f"(?:{det.pattern.replace('(?P<s>', '(?:')})" for det in DETECTORS).encode())


def _trigger_of(det: Detector) -> str:
    if det.trigger is not None:
        return det.trigger
    return det.pattern.replace("\\b", "").replace("(?P<s>", "(?:")


# Every detector's trigger (see :class:`Detector`), over an event's JSON bytes.
_TRIGGER = re2.compile("|".join(f"(?:{_trigger_of(det)})" for det in DETECTORS).encode())
_AWS_KEY_ID_VALUE = re2.compile(_AWS_KEY_ID.encode())
#: The shortest string any detector can match (`?sig=x`).
MIN_LENGTH = 6


def _replacement(match: Any) -> bytes:
    text = match.group(0)
    for kind, whole, secret in _GROUPS:
        start = match.start(whole)
        if start >= 0:
            s_start, s_end = match.start(secret) - start, match.end(secret) - start
            return text[:s_start] + MARKER.format(kind).encode() + text[s_end:]
    return text  # pragma: no cover - some group always matched


def redact_text(text: str) -> str:
    """``text`` with every secret the detectors recognise replaced by ``[REDACTED:<kind>]``.

    An AWS access key id that is the whole string is kept (CloudTrail's
    ``userIdentity.accessKeyId``, auditfed's ``actor.session`` for it): the id names the
    key used, grants nothing alone, and is what an investigation pivots on. Inside text
    (a config line, a command) it is redacted, as its secret key may be next to it.
    """
    if len(text) < MIN_LENGTH:
        return text
    data = text.encode()
    if not _ANY.search(data) or _AWS_KEY_ID_VALUE.fullmatch(data):
        return text
    return _PATTERN.sub(_replacement, data).decode()


def may_hold_secret(data: bytes) -> bool:
    """Quick test of an event's JSON bytes: False means no string in it holds a secret shape.

    A superset of the detectors (a True may find nothing); costs one RE2 scan.
    """
    return _TRIGGER.search(data) is not None


def redact_values(node: Any) -> Any:
    """``node`` with :func:`redact_text` applied to every string in it; copies only what changes.

    The strings are scanned together, joined by NUL (one RE2 call instead of one per
    string); only those a match overlaps are then redacted one by one. That is a superset
    of what a scan of each string finds: the detectors' ``\\b``, ``$`` and character
    classes treat NUL as they treat a string's end, so every string that holds a match
    alone is still overlapped by a match in the joined text.
    """
    strings: list[str] = []
    _collect(node, strings)
    if not strings:
        return node
    encoded = [text.encode() for text in strings]
    joined = b"\0".join(encoded)
    ends = list(accumulate(len(data) + 1 for data in encoded))
    flagged: set[str] = set()
    for match in _ANY.finditer(joined):
        first = bisect_right(ends, match.start())
        last = bisect_right(ends, max(match.end() - 1, match.start()))
        flagged.update(strings[first:last + 1])
    return _rewrite(node, flagged) if flagged else node


def _collect(node: Any, out: list[str]) -> None:
    if isinstance(node, str):
        if len(node) >= MIN_LENGTH:
            out.append(node)
    elif isinstance(node, dict):
        for value in node.values():
            if isinstance(value, str | dict | list):
                _collect(value, out)
    elif isinstance(node, list):
        for value in node:
            if isinstance(value, str | dict | list):
                _collect(value, out)


def _rewrite(node: Any, flagged: set[str]) -> Any:
    """``node`` with its flagged strings redacted; containers are copied only where changed."""
    if isinstance(node, str):
        return redact_text(node) if node in flagged else node
    if not isinstance(node, dict | list):
        return node
    copy: dict[str, Any] | list[Any] | None = None
    for key, value in node.items() if isinstance(node, dict) else enumerate(node):
        if isinstance(value, str | dict | list):
            new = _rewrite(value, flagged)
            if new is not value:
                if copy is None:
                    copy = dict(node) if isinstance(node, dict) else list(node)
                copy[key] = new  # type: ignore[index]
    return node if copy is None else copy
