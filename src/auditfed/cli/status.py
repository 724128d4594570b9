"""``auditfed status``: the leader, the queue of unsequenced events and every node.

From the store directly (``--data``/``--store``: a PostgreSQL cluster's shared
database, or a single node's SQLite file) or from a server (``--url``, an auditor or
admin token; ``GET /v1/cluster/status``).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.console import Console
from rich.table import Table

out = Console(highlight=False, soft_wrap=True)


def local_status(store_url: str) -> dict[str, Any]:
    from auditfed.store import open_store

    store = open_store(store_url)
    try:
        cluster_status = getattr(store, "cluster_status", None)
        if cluster_status is not None:
            return cluster_status()
        latest = store.latest_checkpoint()
        size = store.size()
        return {"store": "sqlite", "leader": "(single node)", "size": size,
                "indexed_size": store.indexed_size(), "checkpoint": latest.size if latest else None,
                "pending": 0, "nodes": []}
    finally:
        store.close()


def render(status: dict[str, Any]) -> None:
    out.print(f"store       {status['store']}")
    out.print(f"leader      {status.get('leader') or '[red]none[/] (no node holds the leader lock)'}"
              + (f"  (epoch {status['leader_epoch']})" if status.get("leader_epoch") is not None else ""))
    out.print(f"log size    {status['size']}  (indexed {status.get('indexed_size')}, "
              f"checkpoint {status.get('checkpoint')})")
    oldest = status.get("oldest_pending_seconds")
    out.print(f"unsequenced {status['pending']}" + (f"  (oldest {oldest:.1f} s)" if oldest else ""))
    if status.get("nodes"):
        table = Table("node", "address", "role", "size", "heartbeat", "pid", "started")
        for node in status["nodes"]:
            role = node["role"]
            shown = {"leader": "[green]leader[/]", "down": "[red]down[/]"}.get(role, role)
            age = node.get("heartbeat_age_seconds")
            table.add_row(node["node"], node.get("address") or "", shown, str(node.get("size") or 0),
                          f"{age:.1f} s ago" if age is not None else "", str(node.get("pid") or ""),
                          node.get("started_at") or "")
        out.print(table)


def register(app: typer.Typer) -> None:
    @app.command()
    def status(
        data: Annotated[Path | None, typer.Option("--data", help="data dir [./auditfed-data]")] = None,
        config: Annotated[Path | None, typer.Option("--config", help="TOML config file")] = None,
        store: Annotated[str | None, typer.Option("--store", help="store URL")] = None,
        url: Annotated[str | None, typer.Option("--url", envvar="AUDITFED_URL", help="use a server's API")] = None,
        token: Annotated[str | None, typer.Option("--token", envvar="AUDITFED_TOKEN", help="bearer token")] = None,
        as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
    ) -> None:
        """Show the leader, the queue of unsequenced events and each node."""
        from auditfed.cli.client import Client
        from auditfed.config import load_settings

        if url:
            client = Client(url, token)
            try:
                result = client.get_json("/v1/cluster/status")
            finally:
                client.close()
        else:
            settings = load_settings(config, data_dir=data, store=store)
            result = local_status(settings.store_url)
        if as_json:
            sys.stdout.write(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode() + "\n")
        else:
            render(result)
