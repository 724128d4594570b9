"""Federation's place in a running server: the hub part always, the forwarder when
``upstream`` is configured; started and stopped with the node."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from auditfed.errors import NotFound
from auditfed.federation.forwarder import Forwarder
from auditfed.federation.hub import Hub, node_summary
from auditfed.ledger import append_signatures

if TYPE_CHECKING:
    from auditfed.node import Node
    from auditfed.store.base import Store

__all__ = ["Federation", "cosigned_checkpoint"]


class Federation:
    def __init__(self, node: Node) -> None:
        self.node = node
        self.hub = Hub(node)
        self.forwarder = (
            Forwarder(node, leads=_leader_test(node)) if node.settings.upstream else None
        )

    def start(self) -> None:
        self.hub.start()
        if self.forwarder is not None:
            self.forwarder.start()

    def stop(self) -> None:
        if self.forwarder is not None:
            self.forwarder.stop()
        self.hub.stop()

    def status(self) -> dict[str, Any]:
        """This server as a node (its upstream) and as a hub (its nodes)."""
        return {
            "node": self.node.settings.node_name,
            "upstream": self.forwarder.status() if self.forwarder else None,
            "witness_key": self.hub.witness_key(),
            "nodes": [node_summary(r) for r in self.node.store.federation_nodes()],
        }


def _leader_test(node: Node) -> Callable[[], bool] | None:
    """On a cluster, only the log's leader forwards (see :mod:`.forwarder`)."""
    sequencer = node.sequencer
    if not hasattr(sequencer, "run_on_leader"):
        return None
    return lambda: bool(sequencer.is_leader)


def cosigned_checkpoint(store: Store) -> str:
    """The latest checkpoint a witness cosigned, with every cosignature line kept for it
    (C2SP signed-note allows any number of signature lines)."""
    size = store.latest_cosigned_size()
    record = store.checkpoint_at_least(size) if size is not None else None
    if record is None or record.size != size:
        raise NotFound("no checkpoint of this log has been cosigned yet")
    return append_signatures(record.note, store.cosignatures(size))
