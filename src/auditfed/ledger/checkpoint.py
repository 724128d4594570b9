"""Transparency log checkpoints, C2SP tlog-checkpoint, signed as C2SP signed notes.

The note text of a checkpoint is::

    <origin>\\n
    <tree size, ASCII decimal, no leading zeroes>\\n
    <base64 root hash>\\n
    [<extension line>\\n ...]

The log signs it with the Ed25519 key whose name is the origin.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from typing import Self

from auditfed.errors import VerificationError
from auditfed.ledger.hashing import HASH_SIZE
from auditfed.ledger.keys import b64decode_strict
from auditfed.ledger.note import Signer, Verifier, open_note

__all__ = ["MAX_TREE_SIZE", "Checkpoint", "sign_checkpoint", "verify_checkpoint"]

MAX_TREE_SIZE = 2**63 - 1
_SIZE = re.compile(r"0|[1-9][0-9]*", re.ASCII)


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A log's tree head: origin, tree size, root hash and (discouraged) extension lines."""

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.origin or "\n" in self.origin:
            raise ValueError("checkpoint origin must be one non-empty line")
        if not 0 <= self.size <= MAX_TREE_SIZE:
            raise ValueError(f"checkpoint tree size out of range: {self.size}")
        if len(self.root) != HASH_SIZE:
            raise ValueError(f"checkpoint root must have {HASH_SIZE} bytes")
        if any(not line or "\n" in line for line in self.extensions):
            raise ValueError("checkpoint extension lines must be non-empty single lines")

    def body(self) -> str:
        """Return the checkpoint's note text."""
        root = base64.b64encode(self.root).decode()
        lines = [self.origin, str(self.size), root, *self.extensions]
        return "".join(line + "\n" for line in lines)

    @classmethod
    def parse(cls, body: str) -> Self:
        """Parse checkpoint note text, strictly; raises :class:`VerificationError`."""
        if not body.endswith("\n"):
            raise VerificationError("malformed checkpoint: text must end with a newline")
        lines = body[:-1].split("\n")
        if len(lines) < 3:
            raise VerificationError("malformed checkpoint: fewer than three lines")
        origin, size, root, *extensions = lines
        if not _SIZE.fullmatch(size):
            raise VerificationError(f"malformed checkpoint: tree size {size[:30]!r}")
        try:
            root_hash = b64decode_strict(root)
            return cls(origin, int(size), root_hash, tuple(extensions))
        except ValueError as exc:
            raise VerificationError(f"malformed checkpoint: {exc}") from exc


def sign_checkpoint(checkpoint: Checkpoint, signer: Signer) -> str:
    """Return the checkpoint as a note signed by the log key, whose name must be the origin."""
    if signer.name != checkpoint.origin:
        raise ValueError(f"key {signer.name!r} cannot sign for origin {checkpoint.origin!r}")
    return signer.sign(checkpoint.body())


def verify_checkpoint(note: str | bytes, verifier: Verifier) -> Checkpoint:
    """Open a checkpoint note signed by the log key ``verifier`` and return the checkpoint.

    The origin must be the verifier's key name. Other signatures (cosignatures) are
    left unverified. Raises :class:`SignatureError` or :class:`VerificationError`.
    """
    opened = open_note(note, [verifier])
    checkpoint = Checkpoint.parse(opened.text)
    if checkpoint.origin != verifier.name:
        raise VerificationError(f"checkpoint origin {checkpoint.origin!r} is not the key name {verifier.name!r}")
    return checkpoint
