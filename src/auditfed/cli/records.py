"""The log's record of an administrative act a CLI command made on the data dir.

``auditfed token create|revoke``, ``retention`` and ``node add|reset`` with ``--data``
act on the store directly, with no token: the record names the operator as the
system knows them (OS user, uid, host, ``local``). The record reaches the log under
the log's single-writer rule, so the Merkle tree and its checkpoints stay correct:

* SQLite, no server running (the data dir's writer lock is free): the command takes
  the lock and appends the record with its own sequencer, which signs a checkpoint
  covering it; records a server left unappended are appended first.
* SQLite, a server running (it holds the lock): the record is handed over and the
  server appends it; the command waits until it is durable.
* PostgreSQL: the record joins the cluster's pending events; the leader appends it
  (at once when a node runs, else when one starts).
"""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console

from auditfed.config import Settings
from auditfed.ingest.meta import local_operator, meta_event, prepare_meta, prepared_from_bytes
from auditfed.ingest.prepare import Prepared
from auditfed.ingest.sequencer import Sequencer
from auditfed.node import load_signer
from auditfed.store import Store, open_store
from auditfed.store.writer_lock import WriterLock

#: Seconds a command waits for a running server to append its record.
HAND_OVER_WAIT = 15.0

err = Console(stderr=True, highlight=False, soft_wrap=True)


def record_local_act(
    settings: Settings, action: str, resource: str, details: dict[str, Any], outcome: str = "success"
) -> None:
    """Append the record of an act this command made on the data dir (see module doc)."""
    actor, operator = local_operator()
    event = meta_event(action, actor, resource, {**details, "operator": operator},
                       outcome=outcome, node=settings.node_name)
    prepared = prepare_meta(event, keyed=True)
    store = open_store(settings.store_url, fsync=settings.fsync)
    try:
        if store.url.startswith("sqlite"):
            lock = WriterLock(settings.data_dir)
            if lock.try_acquire(f"auditfed CLI recording {action}"):
                try:
                    _append(store, settings, prepared)
                finally:
                    lock.release()
                return
        store.hand_over([prepared.row], received_by=f"cli:{operator['user']}@{operator['host']}")
        if _no_leader(store):
            err.print("the record of this act is queued: the node that leads next appends it")
            return
        _wait_until_appended(store, prepared)
    finally:
        store.close()


def _append(store: Store, settings: Settings, prepared: Prepared) -> None:
    """Be the log's writer for one commit (no server runs: this process holds the lock)."""
    left = store.handed_over(limit=10_000)
    sequencer = Sequencer(store, load_signer(settings))
    sequencer.start()
    try:
        sequencer.append_sync([*(prepared_from_bytes(data) for _, _, data in left), prepared])
    finally:
        sequencer.stop()  # signs the checkpoint that covers the record
    store.forget_handed_over([(service, event_id) for service, event_id, _ in left])


def _no_leader(store: Store) -> bool:
    """A PostgreSQL cluster with no node leading (no one would append the record now)."""
    status = getattr(store, "cluster_status", None)
    return status is not None and status()["leader"] is None


def _wait_until_appended(store: Store, prepared: Prepared) -> None:
    row = prepared.row
    deadline = time.monotonic() + HAND_OVER_WAIT
    while store.is_handed_over(row.service, row.event_id):
        if time.monotonic() > deadline:
            err.print("[yellow]warning:[/] the record of this act is queued for the log's writer "
                      "and will be appended when it runs (no server appended it yet)")
            return
        time.sleep(0.05)
