"""The hub's witness key: C2SP tlog-cosignature v1 (Ed25519, signature type 0x04).

The key lives next to the log key in the data dir (``witness.key``, mode 0600),
named ``<log origin>/witness``. The hub cosigns a node checkpoint only after it
verified it (:mod:`auditfed.federation.protocol`); anyone holding the witness's
verifier key (``GET /v1/federation/witness-key``) can check the cosignature lines a
node serves with its checkpoint (``GET /v1/log/checkpoint?cosigned=1``).
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

from auditfed.errors import ConfigError
from auditfed.ledger import Cosigner, cosign

__all__ = ["WITNESS_FILE", "cosign_now", "create_witness_key", "load_witness"]

WITNESS_FILE = "witness.key"


def witness_name(origin: str) -> str:
    return f"{origin}/witness"


def create_witness_key(data_dir: Path, origin: str) -> None:
    """Create the witness key once (O_EXCL: two racing starts cannot both write one)."""
    path = data_dir / WITNESS_FILE
    if path.exists():
        return
    cosigner = Cosigner.generate(witness_name(origin))
    with contextlib.suppress(FileExistsError):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(cosigner.private_key_string() + "\n")


def load_witness(data_dir: Path, origin: str) -> Cosigner:
    """The hub's witness key (created if this data dir predates federation)."""
    create_witness_key(data_dir, origin)
    path = data_dir / WITNESS_FILE
    if path.stat().st_mode & 0o077:
        raise ConfigError(f"{path} is readable by others: chmod 600 it")
    return Cosigner.from_key(path.read_text().strip())


def cosign_now(note: str, cosigner: Cosigner) -> str:
    """The witness's cosignature line for a verified checkpoint note, timestamped now."""
    return cosign(note, cosigner, int(time.time()))
