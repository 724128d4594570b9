"""Witness cosignatures of checkpoints, C2SP tlog-cosignature v1 (Ed25519, type 0x04).

A cosignature is a note signature line by the witness key over the message::

    cosignature/v1\\n
    time <POSIX timestamp>\\n
    <checkpoint note text>

and its signature bytes are ``timestamp (u64 big-endian) || Ed25519 signature``.
The key ID is SHA-256(name || 0x0A || 0x04 || public key)[:4]. A
:class:`CosignatureVerifier` is a :class:`~auditfed.ledger.note.NoteVerifier`, so
:func:`~auditfed.ledger.note.open_note` checks cosignatures like any signature.
"""

from __future__ import annotations

import struct
from typing import Self

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from auditfed.ledger.checkpoint import Checkpoint
from auditfed.ledger.keys import (
    ED25519_COSIGNATURE,
    decode_private_key,
    decode_verifier_key,
    encode_private_key,
    encode_verifier_key,
    is_valid_key_name,
    key_id,
)
from auditfed.ledger.note import NoteSignature, open_note, split_note

__all__ = [
    "MAX_TIMESTAMP",
    "CosignatureVerifier",
    "Cosigner",
    "cosign",
    "cosigned_message",
    "verify_cosignature",
]

MAX_TIMESTAMP = 2**63 - 1
_TIMESTAMP = struct.Struct(">Q")
_SIGNATURE_SIZE = _TIMESTAMP.size + 64


def cosigned_message(body: str, timestamp: int) -> bytes:
    """Return the bytes a v1 cosignature signs: header, time line, checkpoint text."""
    if not 0 <= timestamp <= MAX_TIMESTAMP:
        raise ValueError(f"cosignature timestamp out of range: {timestamp}")
    return f"cosignature/v1\ntime {timestamp}\n{body}".encode()


class Cosigner:
    """An Ed25519 witness key that cosigns checkpoints."""

    def __init__(self, name: str, private_key: Ed25519PrivateKey) -> None:
        if not is_valid_key_name(name):
            raise ValueError(f"invalid key name {name!r}: empty, or has a space or '+'")
        self._name = name
        self._private_key = private_key
        self._public_key = private_key.public_key().public_bytes_raw()
        self._key_id = key_id(name, ED25519_COSIGNATURE, self._public_key)

    @classmethod
    def generate(cls, name: str) -> Self:
        return cls(name, Ed25519PrivateKey.generate())

    @classmethod
    def from_key(cls, private_key_string: str) -> Self:
        """Parse ``PRIVATE+KEY+<name>+<key id>+<base64(0x04 || seed)>``."""
        material = decode_private_key(private_key_string, ED25519_COSIGNATURE)
        return cls(material.name, Ed25519PrivateKey.from_private_bytes(material.key))

    @property
    def name(self) -> str:
        return self._name

    @property
    def key_id(self) -> bytes:
        return self._key_id

    def private_key_string(self) -> str:
        seed = self._private_key.private_bytes_raw()
        return encode_private_key(self._name, ED25519_COSIGNATURE, seed)

    def verifier_key(self) -> str:
        """Return ``<name>+<key id>+<base64(0x04 || public key)>``."""
        return encode_verifier_key(self._name, ED25519_COSIGNATURE, self._public_key)

    def verifier(self) -> CosignatureVerifier:
        return CosignatureVerifier(self._name, self._public_key)

    def signature(self, body: str, timestamp: int) -> NoteSignature:
        """Return the cosignature of checkpoint text ``body`` at ``timestamp``."""
        sig = self._private_key.sign(cosigned_message(body, timestamp))
        return NoteSignature(self._name, self._key_id, _TIMESTAMP.pack(timestamp) + sig)


class CosignatureVerifier:
    """A witness's public key, checking v1 cosignatures."""

    def __init__(self, name: str, public_key: bytes) -> None:
        if not is_valid_key_name(name):
            raise ValueError(f"invalid key name {name!r}: empty, or has a space or '+'")
        self._name = name
        self._public_key = Ed25519PublicKey.from_public_bytes(public_key)
        self._key_id = key_id(name, ED25519_COSIGNATURE, public_key)

    @classmethod
    def from_key(cls, vkey: str) -> Self:
        """Parse ``<name>+<key id>+<base64(0x04 || public key)>``."""
        material = decode_verifier_key(vkey, ED25519_COSIGNATURE)
        return cls(material.name, material.key)

    @property
    def name(self) -> str:
        return self._name

    @property
    def key_id(self) -> bytes:
        return self._key_id

    def verifier_key(self) -> str:
        public_key = self._public_key.public_bytes_raw()
        return encode_verifier_key(self._name, ED25519_COSIGNATURE, public_key)

    def verify(self, text: bytes, signature: bytes) -> bool:
        """Check ``timestamp || signature`` over the cosigned message of note ``text``."""
        if len(signature) != _SIGNATURE_SIZE:
            return False
        (timestamp,) = _TIMESTAMP.unpack_from(signature)
        if timestamp > MAX_TIMESTAMP:
            return False
        try:
            message = cosigned_message(text.decode(), timestamp)
            self._public_key.verify(signature[_TIMESTAMP.size :], message)
        except (InvalidSignature, UnicodeDecodeError):
            return False
        return True


def cosign(checkpoint: Checkpoint | str, cosigner: Cosigner, timestamp: int) -> str:
    """Return the cosignature line for a checkpoint (or a signed checkpoint note).

    The caller, a witness, must first have verified the log's signature and the
    consistency of the checkpoint with the ones it saw before.
    """
    if isinstance(checkpoint, Checkpoint):
        body = checkpoint.body()
    else:
        body, _ = split_note(checkpoint)
        Checkpoint.parse(body)
    return cosigner.signature(body, timestamp).line()


def verify_cosignature(note: str | bytes, verifier: CosignatureVerifier) -> int:
    """Check the witness's cosignature on a checkpoint note; return its timestamp.

    Raises :class:`~auditfed.errors.SignatureError` if the witness did not cosign or the cosignature
    is invalid, :class:`~auditfed.errors.VerificationError` if the note text is not a checkpoint.
    """
    opened = open_note(note, [verifier])
    Checkpoint.parse(opened.text)
    (cosignature,) = opened.verified
    return _TIMESTAMP.unpack_from(cosignature.signature)[0]
