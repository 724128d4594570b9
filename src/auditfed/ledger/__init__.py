"""The provable log: RFC 9162 Merkle tree, proofs, tiles, signed notes and checkpoints.

Every accepted event is a leaf of an append-only Merkle tree hashed as RFC 9162
§2.1 (RFC 6962). The tree is stored as C2SP tlog-tiles; the log commits to it in
C2SP tlog-checkpoint notes signed with Ed25519 (C2SP signed-note), which witnesses
cosign (C2SP tlog-cosignature).

Modules, one concept each:

- :mod:`~auditfed.ledger.hashing` — leaf and node hashes,
- :mod:`~auditfed.ledger.tree` — tree shape: subtrees and proof paths,
- :mod:`~auditfed.ledger.proof` — inclusion and consistency proof verification,
- :mod:`~auditfed.ledger.tiles` — tile layout, proofs from tiles, :class:`TreeAppender`,
- :mod:`~auditfed.ledger.rebuild` — recomputing stored tiles to pinpoint tampering,
- :mod:`~auditfed.ledger.keys` — key names, key IDs, key strings,
- :mod:`~auditfed.ledger.note` — signed notes,
- :mod:`~auditfed.ledger.checkpoint` — checkpoints,
- :mod:`~auditfed.ledger.cosignature` — witness cosignatures.
"""

from auditfed.ledger.checkpoint import Checkpoint, sign_checkpoint, verify_checkpoint
from auditfed.ledger.cosignature import (
    CosignatureVerifier,
    Cosigner,
    cosign,
    verify_cosignature,
)
from auditfed.ledger.hashing import EMPTY_ROOT, HASH_SIZE, leaf_hash, node_hash
from auditfed.ledger.note import (
    Note,
    NoteSignature,
    NoteVerifier,
    Signer,
    Verifier,
    append_signatures,
    open_note,
    sign_note,
)
from auditfed.ledger.proof import (
    root_from_consistency,
    root_from_inclusion,
    verify_consistency,
    verify_inclusion,
)
from auditfed.ledger.rebuild import TileMismatch, TreeRebuilder
from auditfed.ledger.tiles import (
    TILE_HEIGHT,
    TILE_WIDTH,
    TileKey,
    TileReader,
    TreeAppender,
    consistency_proof,
    inclusion_proof,
    root_at,
)

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "TILE_HEIGHT",
    "TILE_WIDTH",
    "Checkpoint",
    "CosignatureVerifier",
    "Cosigner",
    "Note",
    "NoteSignature",
    "NoteVerifier",
    "Signer",
    "TileKey",
    "TileMismatch",
    "TileReader",
    "TreeAppender",
    "TreeRebuilder",
    "Verifier",
    "append_signatures",
    "consistency_proof",
    "cosign",
    "inclusion_proof",
    "leaf_hash",
    "node_hash",
    "open_note",
    "root_at",
    "root_from_consistency",
    "root_from_inclusion",
    "sign_checkpoint",
    "sign_note",
    "verify_checkpoint",
    "verify_consistency",
    "verify_cosignature",
    "verify_inclusion",
]
