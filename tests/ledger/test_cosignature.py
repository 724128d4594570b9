"""C2SP tlog-cosignature v1: Ed25519 witness cosignatures of checkpoints."""

from __future__ import annotations

import base64
import struct
from hashlib import sha256

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from auditfed.errors import SignatureError, VerificationError
from auditfed.ledger import (
    Checkpoint,
    CosignatureVerifier,
    Cosigner,
    Signer,
    Verifier,
    append_signatures,
    cosign,
    open_note,
    sign_checkpoint,
    verify_checkpoint,
    verify_cosignature,
)

ROOT = sha256(b"root").digest()
TIME = 1679315147


@pytest.fixture
def log():
    signer = Signer.generate("node.example/eu-1")
    checkpoint = Checkpoint(signer.name, 20852163, ROOT)
    return signer, checkpoint, sign_checkpoint(checkpoint, signer)


def test_cosignature_round_trip(log):
    signer, checkpoint, note = log
    witness = Cosigner.generate("hub.example/witness")
    line = cosign(note, witness, TIME)
    assert line == cosign(checkpoint, witness, TIME)
    cosigned = append_signatures(note, [line])
    verifier = CosignatureVerifier.from_key(witness.verifier_key())
    assert verify_cosignature(cosigned, verifier) == TIME
    assert verify_checkpoint(cosigned, signer.verifier()) == checkpoint
    opened = open_note(cosigned, [signer.verifier(), verifier])
    assert [s.name for s in opened.verified] == [signer.name, witness.name]


def test_signed_message_and_encoding(log):
    _, checkpoint, note = log
    witness = Cosigner.generate("w")
    line = cosign(note, witness, TIME)
    assert line.startswith("— w ") and line.endswith("\n")
    raw = base64.b64decode(line.split(" ")[2])
    assert raw[:4] == witness.key_id
    assert struct.unpack(">Q", raw[4:12])[0] == TIME
    assert len(raw) == 4 + 8 + 64
    vkey = base64.b64decode(witness.verifier_key().split("+", 2)[2])
    assert vkey[0] == 0x04
    assert witness.key_id == sha256(b"w\n\x04" + vkey[1:]).digest()[:4]
    message = f"cosignature/v1\ntime {TIME}\n".encode() + checkpoint.body().encode()
    Ed25519PublicKey.from_public_bytes(vkey[1:]).verify(raw[12:], message)


def test_keys_round_trip_and_types_do_not_mix():
    witness = Cosigner.generate("w")
    again = Cosigner.from_key(witness.private_key_string())
    assert again.verifier_key() == witness.verifier_key()
    assert again.verifier().verifier_key() == witness.verifier_key()
    with pytest.raises(ValueError):
        Verifier.from_key(witness.verifier_key())  # type 0x04 is not a note key
    with pytest.raises(ValueError):
        CosignatureVerifier.from_key(Signer.generate("s").verifier_key())
    with pytest.raises(ValueError):
        Signer.from_key(witness.private_key_string())


def test_tampered_cosignatures_fail(log):
    _, _, note = log
    witness = Cosigner.generate("w")
    verifier = witness.verifier()
    raw = bytearray(base64.b64decode(cosign(note, witness, TIME).split(" ")[2]))
    raw[11] ^= 1  # the timestamp is signed too
    forged = "— w " + base64.b64encode(bytes(raw)).decode() + "\n"
    with pytest.raises(SignatureError, match="invalid signature by w"):
        verify_cosignature(append_signatures(note, [forged]), verifier)
    other = Cosigner.generate("w")
    with pytest.raises(SignatureError, match="no signature by a known key"):
        verify_cosignature(append_signatures(note, [cosign(note, other, TIME)]), verifier)
    with pytest.raises(SignatureError, match="no signature by a known key"):
        verify_cosignature(note, verifier)
    short = "— w " + base64.b64encode(witness.key_id + b"\0" * 40).decode() + "\n"
    with pytest.raises(SignatureError):
        verify_cosignature(append_signatures(note, [short]), verifier)


def test_cosignature_over_another_checkpoint_fails(log):
    signer, checkpoint, note = log
    witness = Cosigner.generate("w")
    other = sign_checkpoint(Checkpoint(signer.name, checkpoint.size + 1, ROOT), signer)
    line = cosign(other, witness, TIME)
    with pytest.raises(SignatureError):
        verify_cosignature(append_signatures(note, [line]), witness.verifier())


def test_timestamp_range_and_non_checkpoint_notes(log):
    _, checkpoint, _ = log
    witness = Cosigner.generate("w")
    for bad in (-1, 2**63):
        with pytest.raises(ValueError):
            cosign(checkpoint, witness, bad)
    assert cosign(checkpoint, witness, 2**63 - 1)
    not_a_checkpoint = Signer.generate("x").sign("hello\n")
    with pytest.raises(VerificationError):
        cosign(not_a_checkpoint, witness, TIME)
