"""Key names, key IDs and key strings of C2SP signed-note.

- key ID = SHA-256(key name || 0x0A || signature type || public key)[:4]
- verifier key (vkey): ``<name>+<8 hex key ID>+<base64(signature type || public key)>``
- private key: ``PRIVATE+KEY+<name>+<8 hex key ID>+<base64(signature type || seed)>``,
  the form used by Go's golang.org/x/mod/sumdb/note.

Signature types used by auditfed: 0x01 (Ed25519 note signatures, c2sp.org/signed-note)
and 0x04 (timestamped Ed25519 witness cosignatures, c2sp.org/tlog-cosignature).
Malformed key strings raise :class:`ValueError`.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from hashlib import sha256

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

__all__ = [
    "ED25519",
    "ED25519_COSIGNATURE",
    "KeyMaterial",
    "b64decode_strict",
    "decode_private_key",
    "decode_verifier_key",
    "encode_private_key",
    "encode_verifier_key",
    "is_valid_key_name",
    "key_id",
]

ED25519 = 0x01
ED25519_COSIGNATURE = 0x04
_ED25519_KEY_SIZE = 32
_PRIVATE_PREFIX = "PRIVATE+KEY+"
_KEY_ID_HEX = re.compile(r"[0-9a-f]{8}")


@dataclass(frozen=True, slots=True)
class KeyMaterial:
    """A decoded key string: name, key ID, signature type and raw key bytes."""

    name: str
    key_id: bytes
    sig_type: int
    key: bytes


def is_valid_key_name(name: str) -> bool:
    """Key names are non-empty and contain no Unicode space and no '+'."""
    return bool(name) and "+" not in name and not any(c.isspace() for c in name)


def key_id(name: str, sig_type: int, public_key: bytes) -> bytes:
    """Return the 4-byte key ID of a public key."""
    return sha256(name.encode() + b"\n" + bytes([sig_type]) + public_key).digest()[:4]


def b64decode_strict(text: str) -> bytes:
    """Decode standard, padded base64 (RFC 4648 §4), rejecting any other spelling."""
    try:
        data = base64.b64decode(text.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error) as exc:
        raise ValueError(f"invalid base64: {text!r}") from exc
    if base64.b64encode(data).decode() != text:
        raise ValueError(f"non-canonical base64: {text!r}")
    return data


def encode_verifier_key(name: str, sig_type: int, public_key: bytes) -> str:
    """Return the vkey string ``<name>+<hex key ID>+<base64(type || public key)>``."""
    _check_name(name)
    encoded = base64.b64encode(bytes([sig_type]) + public_key).decode()
    return f"{name}+{key_id(name, sig_type, public_key).hex()}+{encoded}"


def decode_verifier_key(vkey: str, sig_type: int) -> KeyMaterial:
    """Parse a vkey string of the given signature type and check its key ID."""
    parts = vkey.split("+", 2)
    if len(parts) != 3:
        raise ValueError("malformed verifier key: want <name>+<key id>+<key>")
    name, id_hex, encoded = parts
    public_key = _decode_key(name, id_hex, encoded, sig_type, "verifier")
    material = KeyMaterial(name, bytes.fromhex(id_hex), sig_type, public_key)
    if material.key_id != key_id(name, sig_type, public_key):
        raise ValueError(f"verifier key for {name!r} has a wrong key ID")
    return material


def encode_private_key(name: str, sig_type: int, seed: bytes) -> str:
    """Return ``PRIVATE+KEY+<name>+<hex key ID>+<base64(type || seed)>``."""
    _check_name(name)
    public_key = _public_key(seed)
    encoded = base64.b64encode(bytes([sig_type]) + seed).decode()
    return f"{_PRIVATE_PREFIX}{name}+{key_id(name, sig_type, public_key).hex()}+{encoded}"


def decode_private_key(skey: str, sig_type: int) -> KeyMaterial:
    """Parse a private key string of the given signature type; ``key`` is the seed."""
    if not skey.startswith(_PRIVATE_PREFIX):
        raise ValueError("malformed private key: want PRIVATE+KEY+<name>+<key id>+<key>")
    parts = skey[len(_PRIVATE_PREFIX) :].split("+", 2)
    if len(parts) != 3:
        raise ValueError("malformed private key: want PRIVATE+KEY+<name>+<key id>+<key>")
    name, id_hex, encoded = parts
    seed = _decode_key(name, id_hex, encoded, sig_type, "private")
    if bytes.fromhex(id_hex) != key_id(name, sig_type, _public_key(seed)):
        raise ValueError(f"private key for {name!r} has a wrong key ID")
    return KeyMaterial(name, bytes.fromhex(id_hex), sig_type, seed)


def _decode_key(name: str, id_hex: str, encoded: str, sig_type: int, kind: str) -> bytes:
    _check_name(name)
    if not _KEY_ID_HEX.fullmatch(id_hex):
        raise ValueError(f"malformed {kind} key: key ID must be 8 lowercase hex digits")
    raw = b64decode_strict(encoded)
    if len(raw) != 1 + _ED25519_KEY_SIZE or raw[0] != sig_type:
        raise ValueError(f"{kind} key for {name!r} is not of signature type {sig_type:#04x}")
    return raw[1:]


def _check_name(name: str) -> None:
    if not is_valid_key_name(name):
        raise ValueError(f"invalid key name {name!r}: empty, or has a space or '+'")


def _public_key(seed: bytes) -> bytes:
    return Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes_raw()
