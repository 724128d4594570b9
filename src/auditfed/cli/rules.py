"""``auditfed rules check|test`` (Sigma rule tooling) and ``auditfed alerts``.

``rules check DIR...`` compiles rules exactly as the server does and reports each
refused rule with the construct at fault (exit 1 if any is refused). ``rules test
RULES... --events FILE`` runs the same engine offline and prints one match per line
(``--json``: ``{"rule_id", "rule_title", "event_id", "index"}``; ``event_id`` is the
source record's own id, ``index`` its position in the file). Event files are
auditfed events (JSON, a JSON array or NDJSON) or a source's own format, normalised
as the server would (``--format cloudtrail|k8s|okta|github|pgaudit|cloudevents|otlp``).

``alerts list|acknowledge|close`` read and manage alerts through a server's API
(``--url``), or list them from a local data dir.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from auditfed.errors import InvalidEvent, InvalidInput

rules_app = typer.Typer(help="Check and test Sigma detection rules.", no_args_is_help=True)
alerts_app = typer.Typer(help="List, acknowledge and close alerts.", no_args_is_help=True)

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="machine-readable output")]
UrlOpt = Annotated[str | None, typer.Option("--url", envvar="AUDITFED_URL", help="use a server's API")]
TokenOpt = Annotated[str | None, typer.Option("--token", envvar="AUDITFED_TOKEN", help="bearer token")]
DataOpt = Annotated[Path | None, typer.Option("--data", help="data dir [./auditfed-data]")]
ConfigOpt = Annotated[Path | None, typer.Option("--config", help="TOML config file")]

#: --format values read as auditfed's own events.
OWN_FORMATS = ("json", "ndjson")
#: Content types given to the source decoders.
CONTENT_TYPES = {
    "pgaudit": "text/plain",
    "cloudevents": "application/cloudevents-batch+json",
}


def _line(value: Any) -> None:
    sys.stdout.write(orjson.dumps(value).decode() + "\n")


# --- rules ---

@rules_app.command("check")
def check(
    paths: Annotated[list[Path], typer.Argument(help="rule files or folders")],
    as_json: JsonOpt = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="list accepted rules too")] = False,
) -> None:
    """Validate Sigma rules as the server compiles them; exit 1 if any is refused."""
    from auditfed.detect import check_rules

    for path in paths:
        if not path.exists():
            raise InvalidInput(f"{path} does not exist")
    diagnostics = check_rules(paths)
    ok = sum(d.severity == "ok" for d in diagnostics)
    refused = [d for d in diagnostics if d.severity == "error"]
    warnings = [d for d in diagnostics if d.severity == "warning"]
    if as_json:
        for d in diagnostics:
            _line(d.to_dict())
    else:
        for d in diagnostics:
            if d.severity == "error":
                out.print(f"[red]refused[/] {escape(str(d))}")
            elif d.severity == "warning":
                out.print(f"[yellow]warning[/] {escape(str(d))}")
            elif verbose:
                out.print(f"[green]ok[/] {escape(str(d))}")
        err.print(f"{ok} rules compiled, {len(refused)} refused, {len(warnings)} warnings")
    if refused:
        raise typer.Exit(1)


@rules_app.command("test")
def test(
    rules: Annotated[list[Path], typer.Argument(help="rule files or folders")],
    events: Annotated[str, typer.Option("--events", help="event file; - for stdin")],
    fmt: Annotated[str, typer.Option(
        "--format", help="auto|json|ndjson|cloudtrail|k8s|okta|github|pgaudit|cloudevents|otlp",
    )] = "auto",
    as_json: JsonOpt = False,
    lateness: Annotated[float, typer.Option("--allowed-lateness", help="seconds")] = 60.0,
) -> None:
    """Run rules over a file of events offline: one line per match."""
    from auditfed.detect import load_rules, test_rules

    for path in rules:
        if not path.exists():
            raise InvalidInput(f"{path} does not exist")
    refused = load_rules(rules).errors
    for error in refused:
        err.print(f"[yellow]rule refused:[/] {escape(str(error))}")
    loaded = load_events(events, fmt)
    matches = 0
    table = Table("index", "event id", "rule", "rule id")
    for match in test_rules(rules, loaded, allowed_lateness=lateness):
        matches += 1
        if as_json:
            _line(match)
        else:
            table.add_row(str(match["index"]), str(match["event_id"]), escape(match["rule_title"]),
                          match["rule_id"])
    if not as_json:
        if matches:
            out.print(table)
        err.print(f"{matches} match(es) in {len(loaded)} events")


def load_events(name: str, fmt: str) -> list[tuple[int, dict[str, Any]]]:
    """``(position in the file, event)`` for a file of auditfed or source events."""
    from auditfed.cli.sending import detect_format

    body = sys.stdin.buffer.read() if name == "-" else _read(name)
    kind = detect_format(name, body) if fmt == "auto" else fmt
    if kind in OWN_FORMATS:
        return _own_events(name, body, kind)
    from auditfed.sources import decode

    content_type = CONTENT_TYPES.get(kind, "application/json")
    if kind in ("otlp", "otel") and not body.lstrip().startswith(b"{"):
        content_type = "application/x-protobuf"
    decoded = decode(kind, body, content_type, {})
    found = []
    for position, item in zip(decoded.positions, decoded.items, strict=True):
        if isinstance(item, dict):
            found.append((position, item))
        else:
            err.print(f"[yellow]skipped[/] {name} record {position}: {escape(str(item))}")
    return found


def _read(name: str) -> bytes:
    try:
        return Path(name).read_bytes()
    except OSError as exc:
        raise InvalidInput(f"cannot read {name}: {exc.strerror}") from None


def _own_events(name: str, body: bytes, kind: str) -> list[tuple[int, dict[str, Any]]]:
    from auditfed.event import validate_event
    from auditfed.ingest.body import BadItem, parse_json_items

    content_type = "application/x-ndjson" if kind == "ndjson" else "application/json"
    found = []
    for position, item in enumerate(parse_json_items(body, content_type)):
        if isinstance(item, BadItem):
            err.print(f"[yellow]skipped[/] {name} item {position}: {escape(item.reason)}")
            continue
        try:
            event = validate_event(item, position=position)
        except InvalidEvent as exc:
            err.print(f"[yellow]skipped[/] {name} item {position}: {escape(exc.detail)}")
            continue
        found.append((position, event))
    return found


# --- alerts ---

def _client(url: str, token: str | None) -> Any:
    from auditfed.cli.client import Client

    return Client(url, token)


@alerts_app.command("list")
def alerts_list(
    status: Annotated[str | None, typer.Option(help="open | acknowledged | closed")] = None,
    level: Annotated[str | None, typer.Option(help="informational | low | medium | high | critical")] = None,
    rule_id: Annotated[str | None, typer.Option("--rule-id")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 50,
    url: UrlOpt = None, token: TokenOpt = None, data: DataOpt = None, config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List alerts, newest first."""
    from auditfed.detect.service import alert_document

    if url:
        client = _client(url, token)
        try:
            params = {k: v for k, v in
                      {"status": status, "level": level, "rule_id": rule_id, "limit": limit}.items()
                      if v is not None}
            alerts = client.get_json("/v1/alerts", **params)["alerts"]
        finally:
            client.close()
    else:
        from auditfed.config import load_settings
        from auditfed.store import open_store

        settings = load_settings(config, data_dir=data)
        store = open_store(settings.store_url, fsync=settings.fsync)
        try:
            alerts = [alert_document(a) for a in store.list_alerts(
                status=status, level=level, rule_id=rule_id, limit=limit)]
        finally:
            store.close()
    if as_json:
        sys.stdout.write(orjson.dumps(alerts, option=orjson.OPT_INDENT_2).decode() + "\n")
        return
    table = Table("log index", "raised", "level", "status", "rule", "events", "id")
    for a in alerts:
        indexes = a["indexes"]
        shown = ",".join(map(str, indexes[:5])) + ("…" if len(indexes) > 5 else "")
        table.add_row(str(a["log_index"]), a["raised_at"], a["level"] or "", a["status"],
                      escape(a["title"]), shown, a["id"])
    out.print(table)


def _change(action: str, alert_id: str, note: str, url: str, token: str | None, as_json: bool) -> None:
    client = _client(url, token)
    try:
        alert = client.request("POST", f"/v1/alerts/{alert_id}/{action}", json={"note": note}).json()
    finally:
        client.close()
    if as_json:
        sys.stdout.write(orjson.dumps(alert, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        out.print(f"{alert['id']}: {alert['status']} ({escape(alert['title'])})")


@alerts_app.command("acknowledge")
def alerts_acknowledge(
    alert_id: str,
    note: Annotated[str, typer.Option("--note", help="what was checked or done")],
    url: Annotated[str, typer.Option("--url", envvar="AUDITFED_URL")] = "http://127.0.0.1:8400",
    token: TokenOpt = None, as_json: JsonOpt = False,
) -> None:
    """Acknowledge an alert with a note (the server logs it)."""
    _change("acknowledge", alert_id, note, url, token, as_json)


@alerts_app.command("close")
def alerts_close(
    alert_id: str,
    note: Annotated[str, typer.Option("--note", help="the resolution")],
    url: Annotated[str, typer.Option("--url", envvar="AUDITFED_URL")] = "http://127.0.0.1:8400",
    token: TokenOpt = None, as_json: JsonOpt = False,
) -> None:
    """Close an alert with a note (the server logs it)."""
    _change("close", alert_id, note, url, token, as_json)


def register(app: typer.Typer) -> None:
    """Add ``rules`` and ``alerts`` to the ``auditfed`` CLI (idempotent)."""
    if getattr(app, "_auditfed_rules", False):
        return
    app._auditfed_rules = True  # type: ignore[attr-defined]
    app.add_typer(rules_app, name="rules")
    app.add_typer(alerts_app, name="alerts")
