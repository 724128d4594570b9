"""``auditfed``: serve, send, verify and prove (DESIGN.md "CLI").

Commands that read a log work on the local data dir by default, or on a server
through its public API when ``--url`` (or ``AUDITFED_URL``) is given. Everything a
script needs goes to stdout (``--json`` where there is structure); progress and
messages go to stderr.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import orjson
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

# Only what the command signatures need is imported here: ``--help`` must not load the
# server stack (pydantic, httpx, the detection engine). Each command imports its own.
from auditfed.cli import answers as answers_cli
from auditfed.cli import collect as collect_command
from auditfed.cli import federation as federation_cli
from auditfed.cli import rules as rules_cli
from auditfed.cli import status as status_cli
from auditfed.defaults import DEFAULT_URL, MAX_TOKEN_SECONDS
from auditfed.errors import AuditfedError, Forbidden, InvalidInput, NotFound

if TYPE_CHECKING:
    from auditfed.cli.access import LogAccess
    from auditfed.config import Settings
    from auditfed.ledger import Verifier

app = typer.Typer(
    name="auditfed",
    help="One provable audit trail across services, data stores, pipelines and clouds.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
token_app = typer.Typer(help="Create, list and revoke API bearer tokens.", no_args_is_help=True)
proof_app = typer.Typer(help="Fetch and check Merkle proofs.", no_args_is_help=True)
app.add_typer(token_app, name="token")
app.add_typer(proof_app, name="proof")
collect_command.register(app)

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

DataOpt = Annotated[Path | None, typer.Option("--data", help="data dir [./auditfed-data]")]
ConfigOpt = Annotated[Path | None, typer.Option("--config", help="TOML config file")]
StoreOpt = Annotated[str | None, typer.Option("--store", help="store URL (default: SQLite in --data)")]
UrlOpt = Annotated[
    str | None, typer.Option("--url", envvar="AUDITFED_URL", help="use a server's API")
]
TokenOpt = Annotated[str | None, typer.Option("--token", envvar="AUDITFED_TOKEN", help="bearer token")]
KeyOpt = Annotated[
    str | None, typer.Option("--key", envvar="AUDITFED_KEY", help="the log's verifier key")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="machine-readable output")]


def _settings(data: Path | None, config: Path | None, **flags: Any) -> Settings:
    from auditfed.config import load_settings

    return load_settings(config, data_dir=data, **flags)


def _access(url: str | None, token: str | None, data: Path | None, config: Path | None,
            store: str | None = None) -> LogAccess:
    from auditfed.cli.access import LocalLog, RemoteLog
    from auditfed.cli.client import Client

    if url:
        return RemoteLog(Client(url, token))
    return LocalLog(_settings(data, config, store=store))


def _verifier(access: LogAccess, key: str | None) -> Verifier:
    from auditfed.cli.access import RemoteLog
    from auditfed.ledger import Verifier

    if key is None:
        if isinstance(access, RemoteLog):
            err.print("[yellow]warning:[/] no --key given: trusting the key the server "
                      "reports; pin it with --key for a real check")
        key = access.verifier_key()
    return Verifier.from_key(key.strip())


def _emit_json(value: Any) -> None:
    sys.stdout.write(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode() + "\n")


def _print_version(wanted: bool) -> None:
    if not wanted:
        return
    from importlib.metadata import PackageNotFoundError, version

    try:
        number = version("auditfed")
    except PackageNotFoundError:  # run from a source tree that was never installed
        from auditfed import __version__ as number
    out.print(f"auditfed {number}")
    raise typer.Exit()


@app.callback()
def _options(
    show_version: Annotated[bool, typer.Option(
        "--version", callback=_print_version, is_eager=True, help="print the version and exit")] = False,
) -> None:
    pass


# --- set-up and serving ---

@app.command()
def init(
    data: DataOpt = None,
    config: ConfigOpt = None,
    store: StoreOpt = None,
    origin: Annotated[str | None, typer.Option(help="log name in checkpoints")] = None,
) -> None:
    """Create a data dir: the log's Ed25519 key, the store and an admin token."""
    from auditfed.node import initialise

    settings = _settings(data, config, store=store, origin=origin)
    created = initialise(settings)
    if created is None:
        raise InvalidInput(f"{settings.data_dir} is already initialised")
    _announce(settings, created)
    _print_admin_token(settings, created.admin_token)


def _announce(settings: Settings, created: Any) -> None:
    err.print(f"Initialised [bold]{settings.data_dir}[/] (log origin {created.origin})")
    err.print(f"Verifier key: {created.verifier_key}")


def _print_admin_token(settings: Settings, token: str) -> None:
    """The admin token alone on stdout, last, where a newcomer looks for it."""
    from auditfed.node import ADMIN_TOKEN_FILE

    err.print(f"Admin token (keep it safe; also in {settings.data_dir / ADMIN_TOKEN_FILE}, mode 0600):")
    out.print(token)


def _admin_token_to_show(settings: Settings, created: Any) -> str | None:
    """The token just created; for the demo also the one kept from an earlier start."""
    from auditfed.node import ADMIN_TOKEN_FILE

    if created is not None:
        return created.admin_token
    kept = settings.data_dir / ADMIN_TOKEN_FILE
    return kept.read_text().strip() if settings.demo and kept.is_file() else None


@app.command()
def serve(
    data: DataOpt = None,
    listen: Annotated[str | None, typer.Option(help="HOST:PORT [127.0.0.1:8400]")] = None,
    config: ConfigOpt = None,
    store: StoreOpt = None,
    demo: Annotated[bool | None, typer.Option("--demo/--no-demo", help="feed demo events")] = None,
    fsync: Annotated[bool | None, typer.Option("--fsync/--no-fsync", help="fsync each commit")] = None,
    max_body_bytes: Annotated[int | None, typer.Option()] = None,
    max_events_per_request: Annotated[int | None, typer.Option()] = None,
    max_event_bytes: Annotated[int | None, typer.Option(help="largest stored event [1 MiB]")] = None,
    checkpoint_interval: Annotated[float | None, typer.Option()] = None,
    ingest_workers: Annotated[int | None, typer.Option(
        help="processes preparing events [one per core]")] = None,
    log_level: Annotated[str | None, typer.Option()] = None,
    log_format: Annotated[str | None, typer.Option()] = None,
    node_name: Annotated[str | None, typer.Option(help="this node's name in a federation")] = None,
    upstream: Annotated[str | None, typer.Option(help="federation hub URL to forward to")] = None,
    upstream_token: Annotated[str | None, typer.Option(help="this node's token at the hub")] = None,
    retention: Annotated[str | None, typer.Option(
        help="remove entries observed longer ago than this (400d, 52w, 7y) [keep all]")] = None,
    retention_floor: Annotated[str | None, typer.Option(
        help="keep meta-audit records at least this long (0: no floor) [400d]")] = None,
) -> None:
    """Run the server (initialising the data dir on first start)."""
    from auditfed.api.server import bind_listener
    from auditfed.api.server import serve as run_server
    from auditfed.node import initialise
    from auditfed.observability import configure_logging

    settings = _settings(
        data, config, listen=listen, store=store, demo=demo, fsync=fsync,
        max_body_bytes=max_body_bytes, max_events_per_request=max_events_per_request,
        max_event_bytes=max_event_bytes, checkpoint_interval=checkpoint_interval, ingest_workers=ingest_workers,
        log_level=log_level, log_format=log_format, node_name=node_name, upstream=upstream,
        upstream_token=upstream_token, retention=retention, retention_floor=retention_floor,
    )
    listener = bind_listener(settings.host, settings.port)  # a port in use fails here, before anything else
    created = initialise(settings)
    if created is not None:
        _announce(settings, created)
    configure_logging(settings.log_level, settings.log_format)
    token = _admin_token_to_show(settings, created)

    def ready() -> None:
        err.print(f"auditfed serving on http://{settings.listen}")
        if token is not None:
            _print_admin_token(settings, token)

    run_server(settings, listener, on_ready=ready)


# --- tokens ---

@token_app.command("create")
def token_create(
    role: Annotated[str, typer.Option(help="source | auditor | admin")],
    service: Annotated[str | None, typer.Option(help="the service a source writes as")] = None,
    environment: Annotated[str | None, typer.Option(help="bind a source to one environment")] = None,
    description: Annotated[str | None, typer.Option()] = None,
    expires_in: Annotated[int | None, typer.Option(
        min=1, max=MAX_TOKEN_SECONDS, help="seconds until it expires")] = None,
    data: DataOpt = None,
    config: ConfigOpt = None,
    url: Annotated[str | None, typer.Option("--url", help="create through a server's API")] = None,
    token: TokenOpt = None,
) -> None:
    """Print a new bearer token (only the token, on stdout)."""
    from auditfed.cli.client import Client
    from auditfed.cli.records import record_local_act
    from auditfed.identity.tokens import TokenAuthority
    from auditfed.ingest.meta import token_details
    from auditfed.node import initialise
    from auditfed.store import open_store

    if url:
        client = Client(url, token)
        body = {"role": role, "service": service, "environment": environment,
                "description": description, "expires_in_seconds": expires_in}
        created = client.request("POST", "/v1/tokens", json=body).json()
        out.print(created["token"])
        return
    settings = _settings(data, config)
    fresh = initialise(settings)
    if fresh is not None:
        err.print(f"Initialised {settings.data_dir}; its admin token (also in its admin.token): "
                  f"{fresh.admin_token}")
    from datetime import UTC, datetime, timedelta

    expires = datetime.now(UTC) + timedelta(seconds=expires_in) if expires_in else None
    store = open_store(settings.store_url, fsync=settings.fsync)
    try:
        secret, created = TokenAuthority(store).create(
            role, service=service, environment=environment, description=description,
            expires_at=expires,
        )
    finally:
        store.close()
    try:
        record_local_act(settings, "admin.token.create", "/v1/tokens", token_details(created))
    except AuditfedError:
        _revoke_unrecorded(settings, created.token_id)
        raise
    out.print(secret)


def _revoke_unrecorded(settings: Settings, token_id: str) -> None:
    """No administrative act without its record: take back a token whose creation
    could not be logged."""
    from auditfed.identity.tokens import TokenAuthority
    from auditfed.store import open_store

    store = open_store(settings.store_url, fsync=settings.fsync)
    try:
        TokenAuthority(store).revoke(token_id)
    finally:
        store.close()
    err.print(f"[red]the creation of token {token_id} could not be logged: it was revoked[/]")


@token_app.command("list")
def token_list(data: DataOpt = None, config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """List tokens (ids, roles, bindings; never the secrets)."""
    from auditfed.identity.tokens import TokenAuthority
    from auditfed.store import open_store

    settings = _settings(data, config)
    store = open_store(settings.store_url, fsync=settings.fsync)
    try:
        records = TokenAuthority(store).list()
    finally:
        store.close()
    if as_json:
        _emit_json([r.__dict__ if hasattr(r, "__dict__") else _record(r) for r in records])
        return
    table = Table("id", "role", "service", "environment", "created", "expires", "revoked")
    for r in records:
        table.add_row(r.token_id, r.role, r.service or "", r.environment or "", r.created_at,
                      r.expires_at or "", r.revoked_at or "")
    out.print(table)


def _record(record: Any) -> dict[str, Any]:
    return {name: getattr(record, name) for name in record.__slots__}


@token_app.command("revoke")
def token_revoke(token_id: str, data: DataOpt = None, config: ConfigOpt = None) -> None:
    """Revoke a token by its id (a running server stops honouring it within a second)."""
    from auditfed.cli.records import record_local_act
    from auditfed.identity.tokens import TokenAuthority
    from auditfed.ingest.meta import token_details
    from auditfed.store import open_store

    settings = _settings(data, config)
    store = open_store(settings.store_url, fsync=settings.fsync)
    try:
        revoked = TokenAuthority(store).revoke(token_id)
    finally:
        store.close()
    if revoked is None:
        raise InvalidInput(f"no active token {token_id}")
    record_local_act(settings, "admin.token.revoke", f"/v1/tokens/{token_id}", token_details(revoked))
    err.print(f"revoked {token_id}")


# --- sending ---

@app.command()
def send(
    files: Annotated[list[str], typer.Argument(help="files to send; - for stdin")],
    format: Annotated[str, typer.Option(
        "--format", help="auto|json|ndjson|otlp|k8s|cloudtrail|pgaudit|cloudevents|github|okta"
    )] = "auto",
    url: Annotated[str, typer.Option("--url", envvar="AUDITFED_URL")] = DEFAULT_URL,
    token: TokenOpt = None,
    batch_size: Annotated[int, typer.Option(min=1, max=10_000)] = 1000,
    as_json: JsonOpt = False,
) -> None:
    """Send audit events to a server, in batches, with retries and a progress bar."""
    from auditfed.cli.client import Client
    from auditfed.cli.sending import send_files

    client = Client(url, token)
    try:
        summary = send_files(client, files, format, batch_size)
    finally:
        client.close()
    if as_json:
        _emit_json(summary)
    else:
        err.print(f"accepted {summary['accepted']}, duplicates {summary['duplicates']}, "
                  f"rejected {summary['rejected']}")
        for error in summary["errors"]:  # all of them: each names its line or item, 1-based
            err.print(f"  [red]rejected[/] {escape(error)}")
    if summary["rejected"]:
        raise typer.Exit(1)


# --- verifying and proving ---

@app.command()
def verify(
    data: DataOpt = None,
    config: ConfigOpt = None,
    store: StoreOpt = None,
    url: UrlOpt = None,
    key: KeyOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Recompute the whole log and check every checkpoint; exit 1 at the first fault."""
    from auditfed.cli.ui import progress_bar
    from auditfed.verification import verify_log

    access = _access(url, token, data, config, store)
    try:
        verifier = _verifier(access, key)
        with progress_bar("verifying", err) as advance:
            report = verify_log(access, verifier, progress=advance)
    finally:
        access.close()
    if as_json:
        _emit_json(report.as_dict())
    elif report.ok:
        removed = (f" (the first {report.removed} removed by retention: checked by their "
                   "stored leaf hashes)" if report.removed else "")
        out.print(f"ok: {report.entries} entries{removed}, {report.checkpoints} checkpoints verified")
    else:
        out.print(f"[red]FAIL[/] at index {report.bad_index}: {report.problem}")
    if not report.ok:
        raise typer.Exit(1)


@app.command()
def retention(
    older_than: Annotated[str | None, typer.Option(
        "--older-than", help="remove entries observed longer ago than this: 400d, 52w, 7y, 12h, 90s"
    )] = None,
    before: Annotated[int | None, typer.Option(
        "--before", min=0, help="remove the entries below this log index"
    )] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="say what would go; change nothing")] = False,
    data: DataOpt = None,
    config: ConfigOpt = None,
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Remove old entries' bytes; their leaf hashes stay, so the log still verifies.

    Safe while a server runs on the same store. ``verify`` afterwards checks the
    removed part from the stored leaf hashes against the signed checkpoints.
    Meta-audit records younger than ``retention_floor`` (400d) are never removed: a
    cut into them is refused. Every run but a dry run is logged, refusals too.
    """
    from auditfed.cli.records import record_local_act
    from auditfed.node import retention_floor
    from auditfed.store import open_store
    from auditfed.store.retention import age_text, apply_retention, parse_age

    settings = _settings(data, config, store=store)
    age = parse_age(older_than) if older_than is not None else None
    floor = retention_floor(settings)
    asked = {"older_than_seconds": age.total_seconds() if age else None, "before": before,
             "floor": age_text(floor) if floor else None}
    log_store = open_store(settings.store_url, fsync=settings.fsync)
    try:
        result = apply_retention(log_store, older_than=age, before=before, dry_run=dry_run, floor=floor)
    except Forbidden as refused:
        if not dry_run:
            record_local_act(settings, "auditfed.retention.apply", "log",
                             {**asked, **refused.extensions, "reason": refused.detail}, outcome="denied")
        raise
    finally:
        log_store.close()
    if not dry_run:
        record_local_act(settings, "auditfed.retention.apply", "log", {**asked, **result.as_dict()})
    if as_json:
        _emit_json({**result.as_dict(), "dry_run": dry_run})
        return
    verb = "would remove" if dry_run else "removed"
    out.print(f"{verb} {result.removed} entries; entries [{result.retained_from}, "
              f"{result.size}) keep their bytes")


@app.command()
def checkpoint(
    data: DataOpt = None, config: ConfigOpt = None, url: UrlOpt = None, key: KeyOpt = None,
    token: TokenOpt = None,
) -> None:
    """Print the latest signed checkpoint, after checking its signature."""
    from auditfed.ledger import verify_checkpoint

    access = _access(url, token, data, config)
    try:
        note = access.checkpoint()
        verify_checkpoint(note, _verifier(access, key))
    finally:
        access.close()
    sys.stdout.write(note)


@proof_app.command("inclusion")
def proof_inclusion(
    index: int,
    size: Annotated[int | None, typer.Option(help="tree size [latest checkpoint]")] = None,
    data: DataOpt = None, config: ConfigOpt = None, url: UrlOpt = None, key: KeyOpt = None,
    token: TokenOpt = None, as_json: JsonOpt = False,
) -> None:
    """Prove that entry INDEX is in the log, against a signed checkpoint."""
    from auditfed.ledger import leaf_hash, verify_checkpoint, verify_inclusion

    access = _access(url, token, data, config)
    try:
        verifier = _verifier(access, key)
        cp = verify_checkpoint(access.checkpoint(size), verifier)
        if index < 0 or index >= cp.size:
            raise InvalidInput(f"index {index} is not in the checkpoint of size {cp.size}")
        rows = list(access.entries(index, index + 1))
        if not rows:
            removed = index < access.retained_from()
            raise NotFound(f"entry {index} was removed by retention: prove it with its bytes "
                           "(auditfed evidence verify)" if removed else f"entry {index} is not stored")
        _, data_bytes = rows[0]
        hashes = access.inclusion_proof(index, cp.size)
        verify_inclusion(leaf_hash(data_bytes), index, cp.size, hashes, cp.root)
    finally:
        access.close()
    result = {"index": index, "size": cp.size, "root": cp.root.hex(), "verified": True,
              "hashes": [h.hex() for h in hashes]}
    if as_json:
        _emit_json(result)
    else:
        out.print(f"ok: entry {index} is included in the signed tree of size {cp.size} "
                  f"(root {cp.root.hex()[:16]}…, {len(hashes)} hashes)")


@proof_app.command("consistency")
def proof_consistency(
    old: int, new: int,
    data: DataOpt = None, config: ConfigOpt = None, url: UrlOpt = None, key: KeyOpt = None,
    token: TokenOpt = None, as_json: JsonOpt = False,
) -> None:
    """Prove that the signed tree of size NEW extends the signed tree of size OLD."""
    from auditfed.ledger import verify_checkpoint, verify_consistency

    access = _access(url, token, data, config)
    try:
        verifier = _verifier(access, key)
        old_cp = verify_checkpoint(access.checkpoint(old), verifier)
        new_cp = verify_checkpoint(access.checkpoint(new), verifier)
        hashes = access.consistency_proof(old, new)
        verify_consistency(old, new, old_cp.root, new_cp.root, hashes)
    finally:
        access.close()
    if as_json:
        _emit_json({"old": old, "new": new, "verified": True, "hashes": [h.hex() for h in hashes]})
    else:
        out.print(f"ok: the signed tree of size {new} is consistent with size {old} "
                  f"({len(hashes)} hashes)")


# --- reading ---

@app.command()
def search(
    query: Annotated[str, typer.Argument(help="e.g. 'action:db.* actor:alice outcome:denied'")] = "",
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 50,
    oldest_first: Annotated[bool, typer.Option("--oldest-first")] = False,
    data: DataOpt = None, config: ConfigOpt = None, url: UrlOpt = None, token: TokenOpt = None,
    as_json: JsonOpt = False,
    fmt: Annotated[str, typer.Option("--format", help="table | json | ocsf (OCSF events, JSON)")] = "table",
) -> None:
    """Search events with the query language."""
    if fmt not in ("table", "json", "ocsf"):
        raise InvalidInput(f"--format must be table, json or ocsf, not {fmt!r}")
    access = _access(url, token, data, config)
    try:
        rows = access.search(query, limit, newest_first=not oldest_first)
    finally:
        access.close()
    if fmt == "ocsf":
        from auditfed.sources.ocsf import to_ocsf

        _emit_json([to_ocsf(e, i) for i, e in rows])
        return
    if as_json or fmt == "json":
        _emit_json([{"index": i, "event": e} for i, e in rows])
        return
    table = Table("index", "time", "action", "outcome", "actor", "resource", "service")
    for index, event in rows:
        table.add_row(
            str(index), event["time"], event["action"], event["outcome"],
            event["actor"].get("principal") or event["actor"]["id"],
            (event.get("resource") or {}).get("id", ""), event["source"]["service"],
        )
    out.print(table)


rules_cli.register(app)
answers_cli.register(app)
federation_cli.register(app)
status_cli.register(app)


def main() -> None:
    try:
        app()
    except AuditfedError as exc:
        err.print(f"[red]error:[/] {exc.detail}")
        sys.exit(1)
