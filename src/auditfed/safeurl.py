"""URLs as they may be shown: credentials replaced before a URL reaches a log, a metric,
an API answer or CLI output.

A configured URL often carries a credential: userinfo (``https://user:pass@host``, RFC
3986 §3.2.1, which the RFC itself says not to use for passwords), a query parameter
(``?api_key=``, ``?token=``, ``?sig=`` of a signed URL), or a path segment that *is* the
key (Slack's ``/services/T…/B…/<key>``, Discord's ``/webhooks/<id>/<token>``). The
server log is kept and shipped; anything written there is as good as published.

:func:`redact_url` renders a URL with those parts replaced by ``***`` and is the one
way a URL with possible credentials is shown. :func:`scrub` removes the same secrets
from any text (an HTTP client's error message may quote the URL).
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, quote, unquote, urlsplit, urlunsplit

__all__ = ["MASK", "redact_url", "scrub", "url_secrets"]

MASK = "***"

#: Query parameter names whose values are secrets (matched anywhere in the lowercased
#: name: ``api_key``, ``X-Amz-Signature``, ``access_token``, ``client_secret``, ...).
_SECRET_PARAM = re.compile(r"key|token|secret|pass|pwd|sig|auth|cred|session|jwt|bearer|code")
#: A path segment that looks like a key: long, letters and digits mixed (a word or a
#: number is kept; Slack, Discord and Teams webhook keys are not).
_KEY_SEGMENT = re.compile(r"(?<=/)(?=[^/]*[A-Za-z])(?=[^/]*\d)[^/]{20,}(?=/|$)")
#: Shorter secrets are not searched for in free text (they would mask ordinary words).
_MIN_SCRUB = 3


def _secret_param(name: str) -> bool:
    return bool(_SECRET_PARAM.search(name.lower()))


def url_secrets(url: str) -> list[str]:
    """The credential substrings of ``url`` (as written and percent-decoded), longest first."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return []
    found: set[str] = set()
    if parts.username:
        found.add(parts.username)
    if parts.password:
        found.add(parts.password)
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if value and _secret_param(name):
            found.add(value)
            found.add(quote(value, safe=""))
    found.update(m.group(0) for m in _KEY_SEGMENT.finditer(parts.path))
    if parts.fragment:
        found.add(parts.fragment)
    found.update(unquote(s) for s in list(found))
    return sorted((s for s in found if s), key=len, reverse=True)


def redact_url(url: str) -> str:
    """``url`` with userinfo, secret-looking query values, key-like path segments and the
    fragment replaced: ``https://***@host/path?api_key=***``. Never raises (a value that
    is not a URL comes back with the same rules applied as far as they go)."""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if "@" in netloc:
            netloc = MASK + "@" + netloc.rsplit("@", 1)[1]
        query = "&".join(_redact_param(pair) for pair in parts.query.split("&")) if parts.query else ""
        path = _KEY_SEGMENT.sub(MASK, parts.path)
        return urlunsplit((parts.scheme, netloc, path, query, MASK if parts.fragment else ""))
    except ValueError:  # e.g. an invalid port or IPv6 literal: show nothing of it
        return MASK


def _redact_param(pair: str) -> str:
    name, sep, value = pair.partition("=")
    if sep and value and _secret_param(unquote(name)):
        return f"{name}={MASK}"
    return pair


def scrub(text: str, url: str) -> str:
    """``text`` with every credential of ``url`` (and the URL itself) replaced."""
    text = text.replace(url, redact_url(url))
    for secret in url_secrets(url):
        if len(secret) >= _MIN_SCRUB:
            text = text.replace(secret, MASK)
    return text
