"""``auditfed trace | timeline | who-accessed | who-changed | enforcement | unjustified-changes | evidence``.

Each command reads a data dir's store directly (``--data``, the default) or asks a
server (``--url`` and ``--token``, or ``AUDITFED_URL`` / ``AUDITFED_TOKEN``); the answer
is the same JSON either way. People get tables and trees (values from events are
escaped, never markup); ``--json`` prints the answer for scripts. ``evidence verify``
needs neither: it checks a bundle file offline against the verifier key you trust.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import quote

import orjson
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.tree import Tree

from auditfed.defaults import DEFAULT_GAP_SECONDS
from auditfed.errors import InvalidInput

if TYPE_CHECKING:
    from auditfed.cli.client import Client
    from auditfed.identity.directory import Directory

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

DataOpt = Annotated[Path | None, typer.Option("--data", help="data dir [./auditfed-data]")]
ConfigOpt = Annotated[Path | None, typer.Option("--config", help="TOML config file")]
UrlOpt = Annotated[str | None, typer.Option("--url", envvar="AUDITFED_URL", help="use a server's API")]
TokenOpt = Annotated[str | None, typer.Option("--token", envvar="AUDITFED_TOKEN", help="bearer token")]
JsonOpt = Annotated[bool, typer.Option("--json", help="machine-readable output")]
LimitOpt = Annotated[int, typer.Option("--limit", min=1, max=10_000, help="at most this many events")]


# --- where answers come from ------------------------------------------------------------------


class _Source:
    """Answers from a local store or from a server's API (same JSON shapes)."""

    def __init__(self, url: str | None, token: str | None, data: Path | None, config: Path | None) -> None:
        from auditfed.cli.access import LocalLog
        from auditfed.cli.client import Client
        from auditfed.config import load_settings

        self.client: Client | None = None
        self.local: LocalLog | None = None
        self.directory: Directory | None = None
        if url:
            self.client = Client(url, token)
        else:
            settings = load_settings(config, data_dir=data)
            self.local = LocalLog(settings)
            self.directory = _directory(getattr(settings, "directory", None), settings.data_dir)

    def __enter__(self) -> _Source:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.client is not None:
            self.client.close()
        if self.local is not None:
            self.local.close()

    def get(self, path: str, **params: Any) -> Any:
        assert self.client is not None
        return self.client.get_json(path, **{k: v for k, v in params.items() if v is not None})


def _directory(value: object, base: Path) -> Directory | None:
    from auditfed.identity.directory import Directory

    if value is None or isinstance(value, Directory):
        return value
    if isinstance(value, Mapping):
        return Directory.from_config(value, base)
    if hasattr(value, "model_dump"):
        return Directory.from_config(value.model_dump(), base)  # type: ignore[union-attr]
    return None


def _emit_json(value: Any) -> None:
    sys.stdout.write(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode() + "\n")


def _e(value: Any) -> str:
    return "" if value is None else escape(str(value))


def _ms(value: float | None) -> str:
    if value is None:
        return "?"
    return f"{value:.0f} ms" if abs(value) < 10_000 else f"{value / 1000:.1f} s"


def _policy(item: Mapping[str, Any]) -> str:
    policy = item.get("policy")
    if not policy:
        return ""
    colour = "red" if policy.get("decision") == "deny" else "green"
    return f"[{colour}]{_e(policy.get('decision'))}[/] {_e(policy.get('rule'))} @{_e(policy.get('enforcer'))}"


# --- commands ---------------------------------------------------------------------------------


def trace_command(
    trace_id: Annotated[str, typer.Argument(help="W3C trace id (32 hex digits)")],
    data: DataOpt = None, config: ConfigOpt = None, url: UrlOpt = None, token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Every event of one trace across services, as a span tree with durations."""
    from auditfed.query.traces import get_trace

    with _Source(url, token, data, config) as src:
        if src.client:
            answer = src.get(f"/v1/traces/{quote(trace_id, safe='')}")
        else:
            answer = get_trace(src.local.store, trace_id)  # type: ignore[union-attr]
    if as_json:
        _emit_json(answer)
        return
    services = ", ".join(_e(s["service"]) for s in answer["services"])
    root = Tree(f"[bold]trace {_e(answer['trace_id'])}[/]  {answer['events']} events · {services} · "
                f"{_ms(answer['duration_ms'])}")
    for node in answer["tree"]:
        _span_branch(root, node)
    out.print(root)
    table = Table("service", "events", "first", "last", "time spent", "actions", title="each service's part")
    for part in answer["services"]:
        table.add_row(_e(part["service"]), str(part["events"]), _e(part["first"]), _e(part["last"]),
                      _ms(part["duration_ms"]), _e(", ".join(part["actions"])))
    out.print(table)
    for link in answer["missing_links"]:
        out.print(f"[red]missing link:[/] span {_e(link['span_id'])} ({_e(link['service'])}, index {link['index']}) "
                  f"names parent {_e(link['parent_span_id'])}: {_e(link['reason'])}")
    if answer["late_arrivals"]:
        out.print(f"[yellow]{answer['late_arrivals']} event(s) reached the log after later events[/]")


def _span_branch(parent: Tree, node: Mapping[str, Any]) -> None:
    flags = ""
    if node.get("missing_parent"):
        flags += f" [red]⚠ parent span {_e(node['parent_span_id'])} missing[/]"
    if node.get("cycle"):
        flags += " [red]⚠ parent links form a cycle[/]"
    if node.get("cut_at_depth"):
        flags += " [yellow](continued: too deep)[/]"
    offset = f" +{_ms(node['after_parent_ms'])}" if node.get("after_parent_ms") is not None else ""
    span = _e((node.get("span_id") or "no span")[:16])
    branch = parent.add(f"[bold cyan]{_e(node['service'])}[/] span {span}{offset} · {_ms(node['duration_ms'])}{flags}")
    for step in node["events"]:
        late = " [yellow](arrived late)[/]" if step.get("late") else ""
        who = step.get("principal") or step.get("actor")
        behalf = f" for {_e(', '.join(step['on_behalf_of']))}" if step.get("on_behalf_of") else ""
        branch.add(f"#{step['index']} {_e(step['time'])} [bold]{_e(step['action'])}[/] {_e(step['outcome'])} "
                   f"by {_e(who)}{behalf} on {_e(step.get('resource') or '-')} {_policy(step)}{late}")
    for child in node["children"]:
        _span_branch(branch, child)


def timeline_command(
    principal: Annotated[str, typer.Argument(help="e.g. alice@corp.example")],
    limit: LimitOpt = 100,
    gap: Annotated[float, typer.Option("--gap", min=1, help="idle seconds shown as a gap")] = DEFAULT_GAP_SECONDS,
    data: DataOpt = None, config: ConfigOpt = None, url: UrlOpt = None, token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Everything one principal did across all sources (aliases expanded), newest first."""
    from auditfed.query.timeline import principal_timeline

    with _Source(url, token, data, config) as src:
        if src.client:
            answer = src.get(f"/v1/principals/{quote(principal, safe='@')}/timeline", limit=limit, gap=gap)
        else:
            answer = principal_timeline(src.local.store, principal, directory=src.directory,  # type: ignore[union-attr]
                                        limit=limit, gap_seconds=gap)
    if as_json:
        _emit_json(answer)
        return
    aliases = ", ".join(answer["aliases"] + answer["alias_patterns"]) or "none known"
    table = Table("index", "time", "action", "outcome", "as", "resource", "service", "env",
                  title=f"{_e(principal)} — {answer['count']} events (aliases: {_e(aliases)})")
    for item in answer["events"]:
        table.add_row(str(item["index"]), _e(item["time"]), _e(item["action"]), _e(item["outcome"]),
                      _e(item["actor"]), _e(item["resource"]), _e(item["service"]), _e(item["environment"]))
        if "switched_from" in item or "idle_before_s" in item:
            notes = []
            if "idle_before_s" in item:
                notes.append(f"[yellow]⏸ idle {item['idle_before_s'] / 3600:.1f} h[/]")
            if "switched_from" in item:
                notes.append(f"[magenta]↔ from {_e(item['switched_from']['service'])}[/]")
            table.add_row("", "", " ".join(notes), "", "", "", "", "")
    out.print(table)
    if answer["more"]:
        err.print(f"(showing the last {answer['count']}; --limit for more)")


def _resource_table(answer: Mapping[str, Any], key: str, title: str) -> Table:
    columns = ["index", "time", "who", "action", "class", "outcome", "from", "service"]
    columns += ["reason"] if key == "changes" else ["on behalf of"]
    table = Table(*columns, title=title)
    for item in answer[key]:
        where = item.get("where") or {}
        origin = " ".join(str(v) for v in (where.get("ip"), where.get("environment")) if v)
        last = (item.get("reason") or "[red]none[/]" if key == "changes"
                else ", ".join(item.get("on_behalf_of") or []))
        outcome = f"[red]{_e(item['outcome'])}[/]" if item.get("denied") else _e(item["outcome"])
        table.add_row(str(item["index"]), _e(item["time"]), _e(item["who"]), _e(item["action"]), _e(item["class"]),
                      outcome, _e(origin), _e(item["service"]),
                      last if last == "[red]none[/]" else _e(last))
    return table


def who_accessed_command(
    resource: Annotated[str, typer.Argument(help="resource id, e.g. billing.invoices (* is a wildcard)")],
    limit: LimitOpt = 1000,
    data: DataOpt = None, config: ConfigOpt = None, url: UrlOpt = None, token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """When was this data read, queried or exported, and by whom."""
    from auditfed.query import compliance

    with _Source(url, token, data, config) as src:
        answer = (src.get("/v1/who-accessed", resource=resource, limit=limit) if src.client
                  else compliance.who_accessed(src.local.store, resource, limit=limit))  # type: ignore[union-attr]
    if as_json:
        _emit_json(answer)
        return
    out.print(_resource_table(answer, "accesses", f"who accessed {_e(resource)} — {answer['count']} "
                                                  f"({answer['denied']} denied)"))


def who_changed_command(
    resource: Annotated[str, typer.Argument(help="resource id (* is a wildcard)")],
    limit: LimitOpt = 1000,
    data: DataOpt = None, config: ConfigOpt = None, url: UrlOpt = None, token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Every create / update / delete / grant / config change: who, when, from where, why."""
    from auditfed.query import compliance

    with _Source(url, token, data, config) as src:
        answer = (src.get("/v1/who-changed", resource=resource, limit=limit) if src.client
                  else compliance.who_changed(src.local.store, resource, limit=limit))  # type: ignore[union-attr]
    if as_json:
        _emit_json(answer)
        return
    out.print(_resource_table(answer, "changes", f"who changed {_e(resource)} — {answer['count']} "
                                                 f"({answer['without_reason']} without a reason)"))


_STATUS = {"ok": "[green]ok[/]", "no decision": "[yellow]gap[/]", "violated": "[red]violated[/]"}


def enforcement_command(
    trace_id: Annotated[str, typer.Argument(help="W3C trace id")],
    check: Annotated[bool, typer.Option("--check", help="exit 1 unless the verdict is 'enforced'")] = False,
    data: DataOpt = None, config: ConfigOpt = None, url: UrlOpt = None, token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """For each hop of a request: was a policy decision recorded, by whom; anything after a deny."""
    from auditfed.query import compliance

    with _Source(url, token, data, config) as src:
        answer = (src.get(f"/v1/enforcement/{quote(trace_id, safe='')}") if src.client
                  else compliance.enforcement(src.local.store, trace_id))  # type: ignore[union-attr]
    if as_json:
        _emit_json(answer)
    else:
        colour = {"enforced": "green", "gaps": "yellow", "violated": "red"}[answer["verdict"]]
        table = Table("hop", "service", "span", "actions", "decision", "enforcer", "status")
        for number, hop in enumerate(answer["hops"], start=1):
            decision = hop["decision"] or "[yellow]none recorded[/]"
            status = _STATUS[hop["status"]]
            table.add_row(f"{'  ' * hop['depth']}{number}", _e(hop["service"]), _e((hop["span_id"] or "-")[:16]),
                          _e(", ".join(hop["actions"])), decision if decision.startswith("[") else _e(decision),
                          _e(", ".join(hop["enforcers"])), status)
        out.print(table)
        for violation in answer["violations"]:
            out.print(f"[red]violation:[/] #{violation['index']} {_e(violation['action'])} at "
                      f"{_e(violation['service'])}: {_e(violation['reason'])} (deny at #{violation['deny_index']})")
        out.print(f"verdict: [bold {colour}]{answer['verdict']}[/]")
    if check and answer["verdict"] != "enforced":
        raise typer.Exit(1)


def unjustified_changes_command(
    since: Annotated[str | None, typer.Option(help="from (inclusive): RFC 3339, date or now-7d")] = None,
    until: Annotated[str | None, typer.Option(help="to (exclusive)")] = None,
    limit: LimitOpt = 1000,
    data: DataOpt = None, config: ConfigOpt = None, url: UrlOpt = None, token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Changes with no stated reason in a time range."""
    from auditfed.query import compliance
    from auditfed.query.reading import parse_time_bound

    with _Source(url, token, data, config) as src:
        if src.client:
            answer = src.get("/v1/unjustified-changes", since=since, until=until, limit=limit)
        else:
            answer = compliance.unjustified_changes(
                src.local.store, since=parse_time_bound("since", since),  # type: ignore[union-attr]
                until=parse_time_bound("until", until), limit=limit)
    if as_json:
        _emit_json(answer)
        return
    out.print(_resource_table(answer, "changes", f"changes without a reason — {answer['count']}"))


# --- evidence ---------------------------------------------------------------------------------

evidence_app = typer.Typer(help="Export and verify offline evidence bundles.", no_args_is_help=True)


@evidence_app.command("export")
def evidence_export(
    query: Annotated[str, typer.Argument(help="query language text, e.g. 'resource:billing.invoices'")],
    output: Annotated[Path, typer.Option("-o", "--output", help="bundle file to write")],
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="at most this many events")] = None,
    consistency_from: Annotated[list[int] | None, typer.Option(
        "--consistency-from", help="include a consistency proof from this older tree size")] = None,
    data: DataOpt = None, config: ConfigOpt = None, url: UrlOpt = None, token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Write the matching events with inclusion proofs against one signed checkpoint."""
    from auditfed.cli.ui import progress_bar
    from auditfed.query import evidence
    from auditfed.query.reading import parse_checked

    expr = parse_checked(query)  # refuse a bad query before touching anything
    older = consistency_from or []
    partial = output.with_name(output.name + ".partial")
    with _Source(url, token, data, config) as src, progress_bar("exporting", err) as advance:
        if src.client:
            summary = _remote_export(src.client, query, limit, older, partial, advance)
        else:
            local = src.local
            assert local is not None
            summary = evidence.export(local.store, expr, partial, query=query,
                                      verifier_key=local.signer.verifier_key(), consistency_from=older,
                                      limit=limit, progress=advance).as_dict()
    partial.replace(output)
    summary["file"] = str(output)
    if as_json:
        _emit_json(summary)
        return
    out.print(f"wrote {summary['entries']} events with inclusion proofs against the signed tree of size "
              f"{summary['tree_size']} to {_e(output)}")
    if summary.get("excluded_beyond_checkpoint"):
        err.print(f"{summary['excluded_beyond_checkpoint']} matching events are newer than the checkpoint "
                  "and were left out")


def _remote_export(client: Client, query: str, limit: int | None, older: list[int], target: Path,
                   advance: Any) -> dict[str, Any]:
    from auditfed.cli.client import ApiError

    body = {"query": query, "limit": limit, "consistency_from": older}
    lines = 0
    last = b""
    with client.http.stream("POST", "/v1/evidence", json=body) as response:
        if response.status_code >= 400:
            response.read()
            Client._checked(response)
        with target.open("wb") as file:
            for chunk in response.iter_bytes(1 << 16):
                file.write(chunk)
                lines += chunk.count(b"\n")
                last = (last + chunk)[-4096:]
                advance(max(0, lines - 1), None)
    try:
        trailer = orjson.loads(last.rstrip(b"\n").rsplit(b"\n", 1)[-1])
        header = orjson.loads(target.open("rb").readline())
        if trailer.get("type") != "end":
            raise ValueError
    except ValueError:
        raise ApiError(0, "the server's bundle is cut off (no trailer); try again") from None
    return {"entries": trailer["entries"], "tree_size": header["tree_size"], "origin": header["origin"],
            "bytes": target.stat().st_size}


@evidence_app.command("verify")
def evidence_verify(
    file: Annotated[Path, typer.Argument(help="bundle written by 'evidence export'")],
    key: Annotated[str, typer.Option("--key", envvar="AUDITFED_KEY",
                                     help="the log's verifier key you trust (or @FILE holding it)")],
    pinned: Annotated[Path | None, typer.Option("--pinned", help="a signed checkpoint note you trust")] = None,
    consistency_proof: Annotated[Path | None, typer.Option(
        "--consistency-proof", help="JSON {\"hashes\": [...]} between the pinned and the bundle's tree sizes")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Check a bundle offline: checkpoint signature, every inclusion, consistency with --pinned."""
    import base64

    from auditfed.cli.ui import progress_bar
    from auditfed.query import evidence

    pinned_note = pinned.read_text() if pinned else None
    hashes = None
    if consistency_proof is not None:
        try:
            listed = orjson.loads(consistency_proof.read_bytes())["hashes"]
            hashes = [base64.b64decode(h, validate=True) for h in listed]
        except (ValueError, KeyError, TypeError):
            raise InvalidInput(f"{consistency_proof} is not a JSON consistency proof "
                               '{"hashes": [base64, ...]}') from None
    key_text = Path(key[1:]).read_text().strip() if key.startswith("@") else key
    with progress_bar("verifying", err) as advance:
        report = evidence.verify(file, key_text, pinned_checkpoint=pinned_note, consistency_hashes=hashes,
                                 progress=advance)
    if as_json:
        _emit_json(report.as_dict())
    elif report.ok:
        extra = "".join(f", consistent with the pinned checkpoint of size {c['pinned_size']}"
                        for c in report.consistency)
        out.print(f"ok: {report.verified} events verified against the signed tree of size {report.tree_size} "
                  f"({_e(report.origin)}){extra}")
        out.print(f"query: {_e(report.query)!s} · exported {_e(report.exported_at)} (as the exporter states)")
    else:
        out.print(f"[red]FAIL[/]: {len(report.problems)} problem(s)"
                  + (" (first ones)" if report.truncated_problems else ""))
        for problem in report.problems[:20]:
            out.print(f"  {_e(problem.message())}")
    if not report.ok:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add the answers' commands to the ``auditfed`` CLI (idempotent)."""
    if getattr(app, "_auditfed_answers", False):
        return
    app._auditfed_answers = True  # type: ignore[attr-defined]
    app.command("trace")(trace_command)
    app.command("timeline")(timeline_command)
    app.command("who-accessed")(who_accessed_command)
    app.command("who-changed")(who_changed_command)
    app.command("enforcement")(enforcement_command)
    app.command("unjustified-changes")(unjustified_changes_command)
    app.add_typer(evidence_app, name="evidence")
