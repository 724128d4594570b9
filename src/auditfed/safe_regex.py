"""The one place that compiles regular expressions that do not come from our source code.

A pattern from a request (pgaudit ``prefix_regex`` and the pattern compiled from a
``log_line_prefix``), from configuration (redaction paths, directory patterns and
templates) or from a Sigma rule (``|re`` values and wildcards) is matched against text
a producer or an auditor controls. Python's ``re`` backtracks: ``(a|a)*`` or
``(a+)+$`` against a few dozen hostile bytes runs for minutes while holding the GIL.
Here such patterns run on RE2 (``google-re2``; syntax: https://github.com/google/re2/wiki/Syntax),
whose matching time is linear in the length of the text and whose memory per pattern is
capped (``max_mem``). RE2 has no backreferences, lookaround, atomic groups or
possessive quantifiers; a pattern that uses them is refused with :class:`RegexRefused`
saying which construct and what to do, never run on a backtracking engine instead.

Flags are RE2 inline flags (``(?i)``, ``(?m)``, ``(?s)``), the same letters and meaning
as Python's ``re.IGNORECASE``/``MULTILINE``/``DOTALL`` and Sigma's ``|i``/``|m``/``|s``.
Known differences from Python ``re``: ``\\Z`` is spelled ``\\z``; ``$`` without ``(?m)``
matches only at the very end; ``\\d``/``\\s``/``\\w`` are ASCII classes.
"""

from __future__ import annotations

from typing import Any, Protocol

import re2  # type: ignore[import-untyped]

from auditfed.errors import InvalidInput

__all__ = ["CONFIG_MAX_MEM", "REQUEST_MAX_MEM", "Regex", "RegexMatch", "RegexRefused", "compile_regex", "escape"]

#: Memory budget of a pattern from configuration or a Sigma rule (RE2's own default).
CONFIG_MAX_MEM = 8 << 20
#: Memory budget of a pattern a request sends: small, because any source token can send one.
REQUEST_MAX_MEM = 1 << 20

# the construct RE2 names in an "invalid perl operator" error -> what it is
_UNSUPPORTED = {
    "(?=": "lookahead (?=...)",
    "(?!": "negative lookahead (?!...)",
    "(?<=": "lookbehind (?<=...)",
    "(?<!": "negative lookbehind (?<!...)",
    "(?>": "an atomic group (?>...)",
    "(?P": "a named backreference (?P=name)",
}
_WHY = "auditfed runs patterns on RE2, which never backtracks; rewrite the pattern without it"


class RegexMatch(Protocol):
    """What callers read from a match (RE2's match object has the ``re.Match`` API)."""

    def group(self, *groups: int | str) -> Any: ...

    def groupdict(self, default: str | None = None) -> dict[str, str | None]: ...

    def start(self, group: int = 0) -> int: ...

    def end(self, group: int = 0) -> int: ...


class Regex(Protocol):
    """A compiled pattern (RE2's pattern object has the ``re.Pattern`` API)."""

    @property
    def pattern(self) -> str: ...

    def match(self, text: str) -> RegexMatch | None: ...

    def fullmatch(self, text: str) -> RegexMatch | None: ...

    def search(self, text: str) -> RegexMatch | None: ...


class RegexRefused(InvalidInput):
    """A pattern the linear-time engine cannot run (bad syntax or a backtracking-only feature)."""

    title = "Unsupported regular expression"


def compile_regex(
    pattern: str,
    *,
    ignore_case: bool = False,
    multiline: bool = False,
    dot_all: bool = False,
    max_mem: int = CONFIG_MAX_MEM,
) -> Regex:
    """Compile ``pattern`` for RE2 with the given flags, or raise :class:`RegexRefused`."""
    flags = "".join(letter for letter, on in (("i", ignore_case), ("m", multiline), ("s", dot_all)) if on)
    options = re2.Options()
    options.max_mem = max_mem
    options.log_errors = False  # refusals are reported to the caller, not to stderr
    try:
        return re2.compile(f"(?{flags}){pattern}" if flags else pattern, options)  # type: ignore[no-any-return]
    except re2.error as exc:
        raise RegexRefused(f"regular expression {pattern!r} is refused: {_explain(exc)}") from None


def escape(text: str) -> str:
    """A pattern (RE2 syntax) that matches ``text`` literally."""
    return re2.escape(text)  # type: ignore[no-any-return]


def _explain(exc: Exception) -> str:
    raw = exc.args[0] if exc.args else str(exc)
    message = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    problem, _, construct = message.partition(": ")
    if problem == "invalid perl operator" and construct in _UNSUPPORTED:
        return f"{_UNSUPPORTED[construct]} is not supported ({_WHY})"
    if problem == "invalid escape sequence" and construct[1:].isdigit():
        return f"a backreference {construct} is not supported ({_WHY})"
    if problem == "bad repetition operator" and construct.endswith("+"):
        return f"a possessive quantifier {construct} is not supported ({_WHY})"
    if construct == "\\Z":
        return "\\Z is spelled \\z in RE2"
    if "too large" in message:
        return f"{message}: the compiled pattern would exceed its memory budget; simplify it"
    return f"{message} (RE2 syntax: https://github.com/google/re2/wiki/Syntax)"
