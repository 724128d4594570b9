"""Signed notes, C2SP signed-note, with Ed25519 signatures (signature type 0x01).

A note is a text ending in a newline, a blank line, then signature lines::

    <text ending in \\n>
    \\n
    — <key name> <base64(4-byte key ID || signature)>\\n
    ...

:func:`open_note` is strict: the note must be UTF-8 without control characters other
than newline, every signature line well formed, no key (name and key ID) signing
twice. Signatures by known keys must all verify and at least one must be present;
signatures by unknown keys are returned unverified (as the spec says, ignored).
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol, Self

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from auditfed.errors import SignatureError
from auditfed.ledger.keys import (
    ED25519,
    b64decode_strict,
    decode_private_key,
    decode_verifier_key,
    encode_private_key,
    encode_verifier_key,
    is_valid_key_name,
    key_id,
)

__all__ = [
    "MAX_SIGNATURES",
    "Note",
    "NoteSignature",
    "NoteVerifier",
    "Signer",
    "Verifier",
    "append_signatures",
    "open_note",
    "sign_note",
    "split_note",
]

MAX_SIGNATURES = 100
"""Most signature lines accepted in one note (the spec requires at least 16)."""

_SIG_PREFIX = "— "  # em dash U+2014, space


class NoteVerifier(Protocol):
    """A known key: :func:`open_note` checks the signatures bearing its name and key ID."""

    @property
    def name(self) -> str: ...

    @property
    def key_id(self) -> bytes: ...

    def verify(self, text: bytes, signature: bytes) -> bool:
        """Return whether ``signature`` (without the key ID) is valid for note ``text``."""
        ...


@dataclass(frozen=True, slots=True)
class NoteSignature:
    """One signature line: key name, 4-byte key ID and signature bytes."""

    name: str
    key_id: bytes
    signature: bytes

    def line(self) -> str:
        """Return the signature line, newline included."""
        encoded = base64.b64encode(self.key_id + self.signature).decode()
        return f"{_SIG_PREFIX}{self.name} {encoded}\n"


@dataclass(frozen=True, slots=True)
class Note:
    """An opened note: its text and its signatures, verified or by unknown keys."""

    text: str
    verified: tuple[NoteSignature, ...]
    unverified: tuple[NoteSignature, ...]


class Signer:
    """An Ed25519 note signing key with its name."""

    def __init__(self, name: str, private_key: Ed25519PrivateKey) -> None:
        if not is_valid_key_name(name):
            raise ValueError(f"invalid key name {name!r}: empty, or has a space or '+'")
        self._name = name
        self._private_key = private_key
        self._public_key = private_key.public_key().public_bytes_raw()
        self._key_id = key_id(name, ED25519, self._public_key)

    @classmethod
    def generate(cls, name: str) -> Self:
        """Return a new random key named ``name``."""
        return cls(name, Ed25519PrivateKey.generate())

    @classmethod
    def from_key(cls, private_key_string: str) -> Self:
        """Parse ``PRIVATE+KEY+<name>+<key id>+<base64(0x01 || seed)>``."""
        material = decode_private_key(private_key_string, ED25519)
        return cls(material.name, Ed25519PrivateKey.from_private_bytes(material.key))

    @property
    def name(self) -> str:
        return self._name

    @property
    def key_id(self) -> bytes:
        """The 4-byte key ID, SHA-256(name || 0x0A || 0x01 || public key)[:4]."""
        return self._key_id

    def private_key_string(self) -> str:
        """Return the private key as ``PRIVATE+KEY+<name>+<key id>+<base64(0x01 || seed)>``."""
        return encode_private_key(self._name, ED25519, self._private_key.private_bytes_raw())

    def verifier_key(self) -> str:
        """Return the verifier key string ``<name>+<key id>+<base64(0x01 || public key)>``."""
        return encode_verifier_key(self._name, ED25519, self._public_key)

    def verifier(self) -> Verifier:
        """Return the matching :class:`Verifier`."""
        return Verifier(self._name, self._public_key)

    def signature(self, text: str) -> NoteSignature:
        """Return this key's signature of note ``text``."""
        _check_text(text)
        return NoteSignature(self._name, self._key_id, self._private_key.sign(text.encode()))

    def sign(self, text: str) -> str:
        """Return the signed note: ``text``, a blank line and this key's signature line."""
        return sign_note(text, [self])


class Verifier:
    """An Ed25519 note verifier key (signature type 0x01)."""

    def __init__(self, name: str, public_key: bytes) -> None:
        if not is_valid_key_name(name):
            raise ValueError(f"invalid key name {name!r}: empty, or has a space or '+'")
        self._name = name
        self._public_key = Ed25519PublicKey.from_public_bytes(public_key)
        self._key_id = key_id(name, ED25519, public_key)

    @classmethod
    def from_key(cls, vkey: str) -> Self:
        """Parse ``<name>+<key id>+<base64(0x01 || public key)>``."""
        material = decode_verifier_key(vkey, ED25519)
        return cls(material.name, material.key)

    @property
    def name(self) -> str:
        return self._name

    @property
    def key_id(self) -> bytes:
        return self._key_id

    def verifier_key(self) -> str:
        return encode_verifier_key(self._name, ED25519, self._public_key.public_bytes_raw())

    def verify(self, text: bytes, signature: bytes) -> bool:
        try:
            self._public_key.verify(signature, text)
        except InvalidSignature:
            return False
        return True


def sign_note(text: str, signers: Sequence[Signer]) -> str:
    """Return ``text`` signed by every signer, in order."""
    if not signers:
        raise ValueError("a note needs at least one signature")
    signatures = [signer.signature(text) for signer in signers]
    if len({(s.name, s.key_id) for s in signatures}) != len(signatures):
        raise ValueError("duplicate signer")
    return text + "\n" + "".join(s.line() for s in signatures)


def split_note(note: str | bytes) -> tuple[str, list[NoteSignature]]:
    """Parse a note into its text and signature lines, strictly, verifying nothing."""
    note = _decode(note)
    if any(c < " " and c != "\n" for c in note):
        raise SignatureError("malformed note: control character")
    split = note.rfind("\n\n")
    if split < 0:
        raise SignatureError("malformed note: no blank line before the signatures")
    text, lines = note[: split + 1], note[split + 2 :]
    if not lines.endswith("\n"):
        raise SignatureError("malformed note: no signature, or no newline after the last")
    signatures = [_parse_signature_line(line) for line in lines[:-1].split("\n")]
    if len(signatures) > MAX_SIGNATURES:
        raise SignatureError(f"note has more than {MAX_SIGNATURES} signatures")
    if len({(s.name, s.key_id) for s in signatures}) != len(signatures):
        raise SignatureError("malformed note: a key signs more than once")
    return text, signatures


def open_note(note: str | bytes, verifiers: Sequence[NoteVerifier]) -> Note:
    """Parse ``note`` and verify its signatures by the known ``verifiers``.

    Raises :class:`SignatureError` if the note is malformed, if a signature by a
    known key is invalid, or if no known key signed it.
    """
    known = {(v.name, v.key_id): v for v in verifiers}
    if len(known) != len(verifiers):
        raise ValueError("two verifiers share a key name and key ID")
    text, signatures = split_note(note)
    message = text.encode()
    verified, unverified = [], []
    for sig in signatures:
        verifier = known.get((sig.name, sig.key_id))
        if verifier is None:
            unverified.append(sig)
        elif verifier.verify(message, sig.signature):
            verified.append(sig)
        else:
            raise SignatureError(f"invalid signature by {sig.name} ({sig.key_id.hex()})")
    if not verified:
        raise SignatureError("note has no signature by a known key")
    return Note(text, tuple(verified), tuple(unverified))


def append_signatures(note: str, signatures: Iterable[NoteSignature | str]) -> str:
    """Return ``note`` with more signature lines (objects or lines) appended, re-checked."""
    lines = [s.line() if isinstance(s, NoteSignature) else s for s in signatures]
    combined = note + "".join(lines)
    split_note(combined)
    return combined


def _decode(note: str | bytes) -> str:
    try:
        if isinstance(note, bytes):
            return note.decode("utf-8")
        note.encode("utf-8")  # a str must be UTF-8 too: a lone surrogate (a \ud800 JSON escape) is not
        return note
    except UnicodeError as exc:
        raise SignatureError("malformed note: not UTF-8") from exc


def _check_text(text: str) -> None:
    if not text.endswith("\n"):
        raise ValueError("note text must end with a newline")
    if any(c < " " and c != "\n" for c in text):
        raise ValueError("note text must not contain control characters other than newline")


def _parse_signature_line(line: str) -> NoteSignature:
    if not line.startswith(_SIG_PREFIX):
        raise SignatureError(f"malformed note: not a signature line: {line[:80]!r}")
    name, space, encoded = line[len(_SIG_PREFIX) :].partition(" ")
    if not space or not is_valid_key_name(name) or " " in encoded:
        raise SignatureError(f"malformed signature line: {line[:80]!r}")
    try:
        raw = b64decode_strict(encoded)
    except ValueError as exc:
        raise SignatureError(f"malformed signature line: {line[:80]!r}") from exc
    if len(raw) < 5:
        raise SignatureError(f"malformed signature line: signature too short: {line[:80]!r}")
    return NoteSignature(name, raw[:4], raw[4:])
