"""The log's own records (meta-audit): what its readers and administrators did.

Every auditor read, administrative act (tokens, federation nodes, retention) and
retention run is itself an event in the log, with ``source.service`` and
``source.kind`` ``auditfed``: the auditors' trail, kept like any other evidence and
protected from retention for ``retention_floor`` (:mod:`auditfed.store.retention`).
A record names the act, who did it and what it touched, never a secret (a token's id,
never its value).

The server's own records go straight to its sequencer. A CLI acting on the data dir
makes records too (:mod:`auditfed.cli.records`); while a server runs, the CLI hands
them over (:meth:`~auditfed.store.base.Store.hand_over`) and the server's
:class:`HandOverDrain` appends them through the same sequencer, so the log keeps one
writer and the Merkle tree and checkpoints stay correct.
"""

from __future__ import annotations

import logging
import os
import pwd
import socket
import threading
from datetime import UTC, datetime
from typing import Any

import orjson

from auditfed.event.model import format_time, new_event_id
from auditfed.identity.tokens import Caller
from auditfed.ingest.prepare import Prepared, entry_row, prepare_event
from auditfed.store.base import Store, TokenRecord

log = logging.getLogger(__name__)

#: ``source.service`` and ``source.kind`` of every record the log makes of itself.
SERVICE = "auditfed"
#: The server acting on its own (retention runs, records handed over by the CLI).
SELF = Caller(SERVICE, "admin")


def meta_event(
    action: str,
    actor: dict[str, Any],
    resource: str,
    details: dict[str, Any],
    *,
    outcome: str = "success",
    node: str | None = None,
) -> dict[str, Any]:
    """The event recording one act of a reader or administrator."""
    source: dict[str, Any] = {"service": SERVICE, "kind": SERVICE}
    if node:
        source["node"] = node
    return {
        "action": action,
        "outcome": outcome,
        "actor": actor,
        "resource": {"type": "endpoint", "id": resource},
        "source": source,
        "attributes": details,
    }


def token_actor(caller: Caller) -> dict[str, Any]:
    """The actor of an act made with a bearer token: its id and role (never its value)."""
    return {"id": f"token:{caller.token_id}", "type": caller.role}


def token_details(record: TokenRecord) -> dict[str, Any]:
    """What a token record tells an auditor: never its secret (only its digest is stored)."""
    return {"token_id": record.token_id, "role": record.role, "service": record.service,
            "environment": record.environment, "expires_at": record.expires_at}


def local_operator() -> tuple[dict[str, Any], dict[str, Any]]:
    """The actor of an act made by a CLI on the data dir, and what is known of them:
    the OS user, uid and host (``local``: no token was involved)."""
    uid = os.getuid()
    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:  # a uid without a passwd entry (containers)
        user = str(uid)
    host = socket.gethostname()
    operator: dict[str, Any] = {"user": user, "uid": uid, "host": host, "local": True,
                                "via": "cli", "pid": os.getpid()}
    if os.environ.get("SUDO_USER"):  # who ran sudo (as the environment says: informative)
        operator["sudo_user"] = os.environ["SUDO_USER"]
    return {"id": f"{user}@{host}", "type": "operator"}, operator


def prepare_meta(event: dict[str, Any], *, keyed: bool = False) -> Prepared:
    """Canonical bytes of a meta-audit record, observed now.

    ``keyed``: give it an id now, so that appending it twice (a hand-over replayed
    after a crash) stores it once: the sequencer answers the second time duplicate.
    """
    if keyed:
        event = {**event, "id": new_event_id()}
    return prepare_event(event, 0, SELF, format_time(datetime.now(UTC)), own=True)


def prepared_from_bytes(data: bytes) -> Prepared:
    """A handed-over record, ready for the sequencer (its id makes it deduplicated)."""
    return Prepared(0, entry_row(orjson.loads(data), data), False)


class HandOverDrain:
    """Appends the records a CLI handed over while this server runs (SQLite only)."""

    #: Seconds between two looks at the queue (a CLI waits about this long).
    INTERVAL = 0.1

    def __init__(self, store: Store, sequencer: Any) -> None:
        self.store = store
        self.sequencer = sequencer
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="auditfed-hand-over", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(self.INTERVAL):
            try:
                self.drain()
            except Exception:
                log.exception("appending handed-over records failed; retrying")

    def drain(self) -> int:
        """Append every queued record durably, then forget it; how many there were."""
        queued = self.store.handed_over()
        if not queued:
            return 0
        self.sequencer.submit([prepared_from_bytes(data) for _, _, data in queued]).result()
        self.store.forget_handed_over([(service, event_id) for service, event_id, _ in queued])
        return len(queued)
