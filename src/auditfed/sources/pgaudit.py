"""pgaudit messages in PostgreSQL server logs -> auditfed events.

Specs: pgaudit README, "Format" (https://github.com/pgaudit/pgaudit#format): the message
``AUDIT: <audit_type>,<statement_id>,<substatement_id>,<class>,<command>,<object_type>,
<object_name>,<statement>,<parameter>`` (CSV); PostgreSQL 15 manual, 20.8 "Error
Reporting and Logging": ``log_line_prefix`` escapes and the ``jsonlog`` format
(https://www.postgresql.org/docs/15/runtime-config-logging.html).

Two line shapes are read, mixed freely:

* stderr format: ``<log_line_prefix><SEVERITY>:  <message>``. The prefix is given as
  the server's ``log_line_prefix`` (default: Debian's ``%m [%p] %q%u@%d ``) and compiled
  to a pattern, or as a regular expression with named groups (``user``, ``database``,
  ``timestamp``, ``pid``, ``session``, ``remote_host``, ``application``). Both run on
  RE2 (:mod:`auditfed.safe_regex`): the time to read a line is linear in its length
  whatever the request's pattern, and a regex RE2 cannot run (backreferences,
  lookaround) is refused with a 400 naming the parameter. The server
  writes a multi-line message with a tab after each newline; a statement continues
  until its CSV quotes balance, so quoted newlines without tabs (psql's echo of
  NOTICEs) are read too.
* ``jsonlog``: one JSON object per line (``user``, ``dbname``, ``message``, ...).

A line that is not a log entry for the prefix is a per-record error, and so is a log
entry that is not a pgaudit ``AUDIT:`` message, unless the sender asks to skip those
(option ``skip_non_audit`` or header ``X-Pgaudit-Skip-Non-Audit: true``, meant for
shippers of whole server logs; skipped entries are counted in ``Decoded.skipped``).
Positions are 0-based line numbers.

Mapping: ``action`` = ``db.<class>.<command>`` (``db.read.select``,
``db.ddl.create_table``); ``actor.id`` = the database user; ``resource`` = the audited
object (``{"type": "table", "id": "public.accounts"}``), else the database.
"""

from __future__ import annotations

import csv
import hashlib
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import orjson

from auditfed.errors import InvalidInput
from auditfed.event import strict_json
from auditfed.safe_regex import REQUEST_MAX_MEM, Regex, RegexRefused, compile_regex
from auditfed.sources.base import Decoded, RecordProblem, action_part, emit, prune, text

KIND = "pgaudit"
SKIP_NON_AUDIT_HEADER = "x-pgaudit-skip-non-audit"
DEFAULT_PREFIX = "%m [%p] %q%u@%d "
SEVERITIES = (
    "DEBUG1|DEBUG2|DEBUG3|DEBUG4|DEBUG5|INFO|NOTICE|WARNING|ERROR|LOG|FATAL|PANIC|"
    "STATEMENT|DETAIL|HINT|CONTEXT|QUERY|LOCATION"
)
_TS = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?(?: [A-Za-z0-9+\-:/_]+)?"

# log_line_prefix escape -> (group name or None, regex)
_ESCAPES: dict[str, tuple[str | None, str]] = {
    "a": ("application", r".*?"),
    "u": ("user", r".*?"),
    "d": ("database", r".*?"),
    "r": ("remote", r"\S*?"),
    "h": ("remote_host", r"\S*?"),
    "L": ("local_address", r"\S*?"),
    "b": ("backend_type", r".*?"),
    "p": ("pid", r"\d+"),
    "P": ("leader_pid", r"\d*"),
    "t": ("timestamp", _TS),
    "m": ("timestamp", _TS),
    "n": ("epoch", r"\d+(?:\.\d+)?"),
    "i": ("command_tag", r".*?"),
    "e": ("sqlstate", r"[0-9A-Z]{5}"),
    "c": ("session", r"[0-9a-f]+\.[0-9a-f]+"),
    "l": ("line", r"\d+"),
    "s": ("session_start", _TS),
    "v": ("vxid", r"\S*?"),
    "x": ("xid", r"\d+"),
    "Q": ("query_id", r"-?\d+"),
}


@lru_cache(maxsize=64)
def compile_prefix(prefix: str) -> Regex:
    """Compile a ``log_line_prefix`` into a regex for ``<prefix><SEVERITY>:  <message>``.

    ``%q`` makes the rest of the prefix optional (non-session processes stop there);
    padding (``%-10u``) is accepted; a repeated escape becomes an unnamed group.
    """
    out: list[str] = []
    optional_from: int | None = None
    seen: set[str] = set()
    i = 0
    while i < len(prefix):
        c = prefix[i]
        if c != "%":
            out.append(re.escape(c))
            i += 1
            continue
        j = i + 1
        while j < len(prefix) and (prefix[j] in "-0123456789"):
            j += 1
        if j >= len(prefix):
            out.append("%")
            break
        esc = prefix[j]
        padded = j > i + 1
        i = j + 1
        if esc == "%":
            out.append("%")
        elif esc == "q":
            optional_from = len(out)
        elif esc in _ESCAPES:
            name, pattern = _ESCAPES[esc]
            body = f"{pattern}\\s*" if padded else pattern
            if padded:
                out.append(r"\s*")
            if name and name not in seen:
                seen.add(name)
                out.append(f"(?P<{name}>{body})")
            else:
                out.append(f"(?:{body})")
        else:
            out.append(re.escape("%" + esc))
    if optional_from is not None:
        out = [*out[:optional_from], "(?:", *out[optional_from:], ")?"]
    return _line_regex("".join(out))


def _line_regex(prefix: str) -> Regex:
    # both prefix forms come with the request, so both run on RE2 with a request's budget
    return compile_regex(f"^(?:{prefix})(?P<severity>{SEVERITIES}):  (?P<message>.*)$", max_mem=REQUEST_MAX_MEM)


@dataclass(frozen=True, slots=True)
class PrefixPattern:
    """How to read a stderr log line: a ``log_line_prefix`` or a ready regex."""

    regex: Regex

    @classmethod
    def from_log_line_prefix(cls, prefix: str) -> PrefixPattern:
        return cls(compile_prefix(prefix))

    @classmethod
    def from_regex(cls, pattern: str) -> PrefixPattern:
        """A regex (RE2 syntax) for the prefix only (named groups as in the module docstring)."""
        return cls(_line_regex(pattern.removeprefix("^")))


def pattern_from(options: Mapping[str, Any], headers: Mapping[str, str]) -> PrefixPattern:
    regex = options.get("prefix_regex") or headers.get("x-pgaudit-prefix-regex")
    if regex:
        with _naming("prefix_regex", "X-Pgaudit-Prefix-Regex"):
            return PrefixPattern.from_regex(regex)
    prefix = options.get("log_line_prefix")
    if prefix is None:
        prefix = headers.get("x-pgaudit-log-line-prefix", DEFAULT_PREFIX)
    with _naming("log_line_prefix", "X-Pgaudit-Log-Line-Prefix"):
        return PrefixPattern.from_log_line_prefix(prefix)


@contextmanager
def _naming(parameter: str, header: str) -> Iterator[None]:
    """A refused pattern names the request parameter it came from."""
    try:
        yield
    except RegexRefused as exc:
        raise RegexRefused(
            f"pgaudit {parameter} (query parameter, or header {header}): {exc.detail}", parameter=parameter
        ) from None


def decode(
    body: bytes,
    content_type: str | None,
    headers: Mapping[str, str],
    options: Mapping[str, Any] | None = None,
) -> Decoded:
    options = options or {}
    try:
        content = body.decode("utf-8")
    except UnicodeDecodeError:
        content = body.decode("utf-8", errors="replace")
    if not content.strip():
        raise InvalidInput("empty body: expected PostgreSQL log lines")
    pattern = pattern_from(options, headers)
    service = text(options.get("service")) or "postgresql"
    flag = options.get("skip_non_audit", headers.get(SKIP_NON_AUDIT_HEADER, False))
    skip = flag is True or str(flag).strip().lower() in ("1", "true", "yes", "on")
    decoded = Decoded(KIND)
    lines = content.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    i = 0
    n = len(lines)
    while i < n:
        line = lines[i].rstrip("\r")
        start = i
        i += 1
        if not line.strip():
            continue
        if line.startswith("{"):
            emit(decoded, start, lambda ln=line: _from_jsonlog(ln, service, skip))
            continue
        match = pattern.regex.match(line)
        if match is None:
            if line.startswith("\t"):
                decoded.skipped += 1  # continuation of a skipped entry
                continue
            decoded.error(
                start,
                f"line {start + 1} is not a PostgreSQL log line for the configured "
                f"log_line_prefix (pattern {pattern.regex.pattern[:200]!r}): {line[:120]!r}",
            )
            continue
        message = match.group("message")
        is_audit = message.startswith("AUDIT: ")
        # gather continuation lines: tab-led, or inside an open CSV quote
        parts = [message]
        raw = [line]
        open_quote = is_audit and _quote_open(message)
        while i < n:
            nxt = lines[i].rstrip("\r")
            if nxt.startswith("\t"):
                parts.append(nxt[1:])
            elif open_quote and pattern.regex.match(nxt) is None:
                parts.append(nxt)
            else:
                break
            raw.append(nxt)
            if is_audit and _quote_open(parts[-1]):
                # parity per line, not of the whole entry so far: linear in the entry's length
                open_quote = not open_quote
            i += 1
        if not is_audit:
            if skip:
                decoded.skipped += 1
            else:
                decoded.error(start, _not_audit(match.group("severity"), message))
            continue
        fields = match.groupdict()
        full = "\n".join(parts)
        entry = "\n".join(raw)
        emit(decoded, start, lambda f=fields, m=full, e=entry: _from_stderr(f, m, e, service))
    return decoded


def _not_audit(severity: str | None, message: str) -> str:
    return (f"a PostgreSQL {severity or 'log'} entry, but not a pgaudit 'AUDIT:' message: "
            f"{message[:100]!r} (send X-Pgaudit-Skip-Non-Audit: true to skip such entries)")


def _quote_open(message: str) -> bool:
    return message.count('"') % 2 == 1


def parse_audit(message: str) -> dict[str, Any]:
    """``AUDIT: ...`` CSV -> its named fields."""
    if not message.startswith("AUDIT: "):
        raise RecordProblem("not a pgaudit AUDIT: message")
    try:
        rows = list(csv.reader(message[7:].splitlines(keepends=True) or [""], strict=True))
    except csv.Error as exc:
        raise RecordProblem(f"pgaudit AUDIT: message is not valid CSV: {exc}") from None
    if len(rows) != 1:
        raise RecordProblem("pgaudit AUDIT: message is not one CSV row")
    row = rows[0]
    if len(row) < 9:
        raise RecordProblem(
            f"pgaudit AUDIT: message has {len(row)} fields, expected at least 9 "
            "(audit_type,statement_id,substatement_id,class,command,object_type,"
            "object_name,statement,parameter)"
        )
    audit_type, stmt_id, substmt_id, klass, command, obj_type, obj_name = row[:7]
    if audit_type not in ("SESSION", "OBJECT"):
        raise RecordProblem(f"pgaudit audit type must be SESSION or OBJECT, got {audit_type!r}")
    if not klass or not command:
        raise RecordProblem("pgaudit AUDIT: message without class or command")
    return {
        "audit_type": audit_type,
        "statement_id": stmt_id,
        "substatement_id": substmt_id,
        "class": klass,
        "command": command,
        "object_type": obj_type,
        "object_name": obj_name,
        "statement": row[7],
        "parameter": row[8],
        "extra": row[9:],
    }


def _pg_time(value: str | None) -> str | None:
    """``2026-11-27 18:50:01.123 UTC`` -> RFC 3339 (None when the zone is unknown)."""
    if not value:
        return None
    parts = value.split(" ")
    if len(parts) < 2:
        return None
    stamp = f"{parts[0]}T{parts[1]}"
    zone = parts[2] if len(parts) > 2 else ""
    if zone in ("UTC", "GMT", "Z", "UCT", "Etc/UTC"):
        return stamp + "Z"
    m = re.fullmatch(r"([+-])(\d\d):?(\d\d)?", zone)
    if m:
        return f"{stamp}{m.group(1)}{m.group(2)}:{m.group(3) or '00'}"
    return None


def _event(
    audit: dict[str, Any],
    *,
    user: str | None,
    database: str | None,
    timestamp: str | None,
    raw_time: str | None,
    pid: str | None,
    session: str | None,
    remote_host: str | None,
    application: str | None,
    severity: str | None,
    original: dict[str, Any],
    service: str,
) -> dict[str, Any]:
    if not user or user == "[unknown]":
        raise RecordProblem(
            "no database user in the log entry: add %u to log_line_prefix (or use jsonlog)"
        )
    klass = audit["class"]
    command = audit["command"]
    obj_type = audit["object_type"]
    obj_name = audit["object_name"]
    if obj_name:
        resource = {
            "type": (obj_type or "object").lower().replace(" ", "_"),
            "id": obj_name,
            "name": obj_name.rsplit(".", 1)[-1],
        }
    elif database:
        resource = {"type": "database", "id": database, "name": database}
    else:
        resource = {}
    actor: dict[str, Any] = {"id": user, "type": "user"}
    if session:
        actor["session"] = session
    if remote_host and remote_host not in ("[local]", "[unknown]"):
        actor["ip"] = remote_host
    if application and application != "[unknown]":
        actor["user_agent"] = application
    id_parts = [session or f"{pid or ''}@{raw_time or ''}", audit["statement_id"],
                audit["substatement_id"], audit["audit_type"], obj_name]
    ident = "pgaudit:" + ":".join(p or "" for p in id_parts)
    if len(ident) > 256:
        ident = "pgaudit:" + hashlib.sha256(ident.encode()).hexdigest()
    event: dict[str, Any] = {
        "action": f"db.{action_part(klass.lower())}.{action_part(command.lower())}",
        "outcome": "success",
        "actor": actor,
        "source": {"service": service, "kind": KIND},
        "attributes": prune({
            "db.system": "postgresql",
            "db.name": database,
            "db.statement": audit["statement"] if audit["statement"] not in (
                "<not logged>", "<previously logged>") else None,
            "db.parameters": audit["parameter"] if audit["parameter"] not in (
                "<not logged>", "<none>", "<previously logged>") else None,
            "pgaudit.audit_type": audit["audit_type"],
            "pgaudit.class": klass,
            "pgaudit.command": command,
            "pgaudit.statement_id": audit["statement_id"],
            "pgaudit.substatement_id": audit["substatement_id"],
            "pgaudit.extra": audit["extra"],
            "pg.pid": pid,
            "pg.severity": severity,
        }),
        "original": original,
    }
    if pid or session:
        event["id"] = ident
    if resource:
        event["resource"] = resource
    if timestamp:
        event["time"] = timestamp
    return event


def _from_stderr(fields: dict[str, Any], message: str, entry: str, service: str) -> dict[str, Any]:
    audit = parse_audit(message)
    remote = fields.get("remote_host") or (fields.get("remote") or "").rsplit("(", 1)[0] or None
    raw_time = fields.get("timestamp")
    original = {"line": entry}  # the log entry as written (continuation lines included)
    return _event(
        audit,
        user=fields.get("user"),
        database=fields.get("database"),
        timestamp=_pg_time(raw_time),
        raw_time=raw_time,
        pid=fields.get("pid"),
        session=fields.get("session"),
        remote_host=remote,
        application=fields.get("application"),
        severity=fields.get("severity"),
        original=original,
        service=service,
    )


def _from_jsonlog(line: str, service: str, skip: bool) -> dict[str, Any] | None:
    try:
        record = strict_json.loads(line)
    except orjson.JSONDecodeError as exc:
        raise RecordProblem(f"invalid jsonlog line: {exc}") from None
    if not isinstance(record, dict):
        raise RecordProblem("a jsonlog line must be a JSON object")
    message = record.get("message")
    if not isinstance(message, str):
        raise RecordProblem("jsonlog entry without message")
    if not message.startswith("AUDIT: "):
        if skip:
            return None  # a log entry, but not an audit one: counted as skipped
        raise RecordProblem(_not_audit(text(record.get("error_severity")), message))
    audit = parse_audit(message)
    pid = record.get("pid")
    return _event(
        audit,
        user=text(record.get("user")),
        database=text(record.get("dbname")),
        timestamp=_pg_time(text(record.get("timestamp"))),
        raw_time=text(record.get("timestamp")),
        pid=str(pid) if pid is not None else None,
        session=text(record.get("session_id")),
        remote_host=text(record.get("remote_host")),
        application=text(record.get("application_name")),
        severity=text(record.get("error_severity")),
        original=record,
        service=service,
    )
