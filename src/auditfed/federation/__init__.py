"""Federation: nodes forward their logs to a hub that verifies, witnesses and keeps them.

Each environment runs its own auditfed *node* with its own provable log (RFC 9162
Merkle tree, C2SP tlog-checkpoint). A node's :mod:`~auditfed.federation.forwarder`
sends its entries, in index order, to a *hub*, with the node's latest signed
checkpoint and RFC 9162 consistency proofs. The hub
(:mod:`~auditfed.federation.hub`) rebuilds each node's tree from the entries
(:mod:`~auditfed.federation.compact`, a compact range), checks the checkpoint
against the node's enrolled key and against the last checkpoint it accepted,
appends the entries to its own log wrapped with their origin
(:mod:`~auditfed.federation.envelope`) and cosigns the checkpoint as a witness
(C2SP tlog-cosignature, :mod:`~auditfed.federation.witness`). The wire format is in
:mod:`~auditfed.federation.protocol`; docs/federation.md describes the whole.
"""

from auditfed.federation.compact import CompactRange
from auditfed.federation.envelope import node_leaf_data, unwrap, wrap
from auditfed.federation.protocol import Violation

__all__ = ["CompactRange", "Violation", "node_leaf_data", "unwrap", "wrap"]
