"""``auditfed node add|reset|list`` (on a hub) and ``auditfed federation status``.

``node add`` and ``node reset`` work on the hub's data dir directly, like ``token
create``, or through its API with ``--url``; either way the act is logged
(:mod:`auditfed.cli.records`). ``federation status`` asks a running
server (``--url``): as a node, how far its hub has acknowledged its log (the lag);
as a hub, what it verified of each node.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import orjson
import typer
from rich.console import Console
from rich.table import Table

from auditfed.defaults import DEFAULT_URL

if TYPE_CHECKING:
    from auditfed.config import Settings
    from auditfed.store import Store

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

node_app = typer.Typer(help="Enrol and manage the nodes that forward to this hub.",
                       no_args_is_help=True)
federation_app = typer.Typer(help="Federation: forwarding to a hub, witnessing nodes.",
                             no_args_is_help=True)

DataOpt = Annotated[Path | None, typer.Option("--data", help="data dir [./auditfed-data]")]
ConfigOpt = Annotated[Path | None, typer.Option("--config", help="TOML config file")]
UrlOpt = Annotated[str | None, typer.Option("--url", envvar="AUDITFED_URL", help="use a server's API")]
TokenOpt = Annotated[str | None, typer.Option("--token", envvar="AUDITFED_TOKEN", help="bearer token")]
JsonOpt = Annotated[bool, typer.Option("--json", help="machine-readable output")]


def _emit(value: Any) -> None:
    sys.stdout.write(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode() + "\n")


def _local_store(data: Path | None, config: Path | None) -> tuple[Settings, Store]:
    from auditfed.config import load_settings
    from auditfed.node import initialise
    from auditfed.store import open_store

    settings = load_settings(config, data_dir=data)
    fresh = initialise(settings)
    if fresh is not None:
        err.print(f"Initialised {settings.data_dir}; its admin token (also in its admin.token): "
                  f"{fresh.admin_token}")
    return settings, open_store(settings.store_url, fsync=settings.fsync)


@node_app.command("add")
def node_add(
    name: Annotated[str, typer.Argument(help="the node's name (its --node-name)")],
    key: Annotated[str, typer.Option("--key", help="the node's log verifier key (auditfed checkpoint "
                                     "prints the origin; GET /v1/log/key on the node)")],
    data: DataOpt = None, config: ConfigOpt = None, url: UrlOpt = None, token: TokenOpt = None,
) -> None:
    """Enrol a node: register its log key; print its node token (stdout, only now)."""
    from auditfed.cli.client import Client
    from auditfed.cli.records import record_local_act
    from auditfed.federation.hub import enrol_node

    if url:
        created = Client(url, token).request("POST", "/v1/federation/nodes",
                                             json={"name": name, "key": key}).json()
        out.print(created["token"])
        return
    settings, store = _local_store(data, config)
    try:
        secret, enrolled = enrol_node(store, name, key)
    finally:
        store.close()
    record_local_act(settings, "admin.federation.enrol", "/v1/federation/nodes",
                     {"node": name, "key": enrolled.key})
    err.print(f"enrolled node {name}; its token (pass it as --upstream-token on the node):")
    out.print(secret)


@node_app.command("reset")
def node_reset(
    name: str,
    rebaseline: Annotated[bool, typer.Option(
        "--rebaseline", help="also forget what was verified of the node's log (a rebuilt node)")] = False,
    data: DataOpt = None, config: ConfigOpt = None, url: UrlOpt = None, token: TokenOpt = None,
) -> None:
    """Reinstate a refused node (after an alert has been dealt with)."""
    from auditfed.cli.client import Client
    from auditfed.cli.records import record_local_act
    from auditfed.federation.hub import reinstate_node

    if url:
        Client(url, token).request("POST", f"/v1/federation/nodes/{name}/reinstate",
                                   json={"rebaseline": rebaseline})
    else:
        settings, store = _local_store(data, config)
        try:
            reinstate_node(store, name, rebaseline=rebaseline)
        finally:
            store.close()
        record_local_act(settings, "admin.federation.reinstate",
                         f"/v1/federation/nodes/{name}/reinstate", {"node": name, "rebaseline": rebaseline})
    err.print(f"node {name} reinstated" + (" (rebaselined)" if rebaseline else ""))


@node_app.command("list")
def node_list(data: DataOpt = None, config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """Enrolled nodes and what the hub verified of each."""
    from auditfed.federation.hub import node_summary

    _, store = _local_store(data, config)
    try:
        nodes = [node_summary(r) for r in store.federation_nodes()]
    finally:
        store.close()
    if as_json:
        _emit(nodes)
        return
    _nodes_table(nodes)


def _nodes_table(nodes: list[dict[str, Any]]) -> None:
    table = Table("node", "status", "position", "checkpoint", "last seen", "reason")
    for n in nodes:
        cp = n["checkpoint"]
        table.add_row(n["node"], n["status"], str(n["position"]), str(cp["size"]) if cp else "",
                      n["last_seen"] or "", n["reason"] or "")
    out.print(table)


@federation_app.command("status")
def federation_status(
    url: Annotated[str, typer.Option("--url", envvar="AUDITFED_URL")] = DEFAULT_URL,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Forwarding lag of this node and the state of the nodes of this hub."""
    from auditfed.cli.client import Client

    status = Client(url, token).request("GET", "/v1/federation/status").json()
    if as_json:
        _emit(status)
        return
    upstream = status.get("upstream")
    if upstream:
        lag = upstream["lag_entries"]
        out.print(f"node [bold]{upstream['node']}[/] -> {upstream['upstream']}: {upstream['state']}")
        out.print(f"  log size {upstream['size']}, acknowledged {upstream['acknowledged']}, "
                  f"lag {lag if lag is not None else '?'} entries / {upstream['lag_seconds']} s")
        out.print(f"  cosigned checkpoint size {upstream['cosigned_size']}, "
                  f"last success {upstream['last_success']}")
        if upstream.get("last_error"):
            out.print(f"  last error: {upstream['last_error']}")
    else:
        out.print("no upstream (this server forwards to no hub)")
    if status.get("nodes"):
        out.print(f"hub witness key: {status['witness_key']}")
        _nodes_table(status["nodes"])


def register(app: typer.Typer) -> None:
    """Add ``node`` and ``federation`` to the ``auditfed`` CLI (idempotent)."""
    if getattr(app, "_auditfed_federation", False):
        return
    app._auditfed_federation = True  # type: ignore[attr-defined]
    app.add_typer(node_app, name="node")
    app.add_typer(federation_app, name="federation")
