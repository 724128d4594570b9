"""C2SP signed-note: the Go sumdb/note known answer, strict parsing, verification rules."""

from __future__ import annotations

import base64

import pytest

from auditfed.errors import SignatureError
from auditfed.ledger import Signer, Verifier, append_signatures, open_note, sign_note
from auditfed.ledger.note import MAX_SIGNATURES, NoteSignature, split_note

# Known answer from golang.org/x/mod/sumdb/note.
SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
TEXT = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n"
SIG_LINE = (
    "— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
)
NOTE = TEXT + "\n" + SIG_LINE


def test_known_answer_signing():
    signer = Signer.from_key(SKEY)
    assert signer.name == "PeterNeumann"
    assert signer.key_id.hex() == "c74f20a3"
    assert signer.verifier_key() == VKEY
    assert signer.private_key_string() == SKEY
    assert signer.sign(TEXT) == NOTE


def test_known_answer_verification():
    verifier = Verifier.from_key(VKEY)
    assert verifier.verifier_key() == VKEY
    note = open_note(NOTE, [verifier])
    assert note.text == TEXT
    assert [s.name for s in note.verified] == ["PeterNeumann"]
    assert note.unverified == ()
    assert open_note(NOTE.encode(), [verifier]).text == TEXT


def test_generated_keys_round_trip():
    signer = Signer.generate("auditfed.example/log")
    again = Signer.from_key(signer.private_key_string())
    assert again.verifier_key() == signer.verifier_key()
    verifier = Verifier.from_key(signer.verifier_key())
    assert verifier.key_id == signer.key_id
    assert open_note(again.sign("hello\n"), [verifier]).text == "hello\n"


def test_bad_signature_is_rejected():
    raw = bytearray(base64.b64decode(SIG_LINE.split()[2]))
    raw[10] ^= 1
    note = TEXT + "\n— PeterNeumann " + base64.b64encode(bytes(raw)).decode() + "\n"
    with pytest.raises(SignatureError, match="invalid signature by PeterNeumann"):
        open_note(note, [Verifier.from_key(VKEY)])


def test_altered_text_is_rejected():
    with pytest.raises(SignatureError, match="invalid signature"):
        open_note(NOTE.replace("answer", "Answer"), [Verifier.from_key(VKEY)])


def test_signature_by_unknown_or_other_key():
    other = Signer.generate("PeterNeumann")  # same name, other key: unknown, ignored
    with pytest.raises(SignatureError, match="no signature by a known key"):
        open_note(NOTE, [other.verifier()])
    with pytest.raises(SignatureError, match="no signature by a known key"):
        open_note(NOTE, [])
    both = append_signatures(NOTE, [other.signature(TEXT)])
    note = open_note(both, [Verifier.from_key(VKEY)])
    assert [s.key_id for s in note.unverified] == [other.key_id]
    note = open_note(both, [Verifier.from_key(VKEY), other.verifier()])
    assert len(note.verified) == 2


def test_a_bad_known_signature_rejects_the_note_even_if_another_verifies():
    other = Signer.generate("witness")
    forged = NoteSignature(other.name, other.key_id, b"\0" * 64)
    note = append_signatures(NOTE, [forged])
    with pytest.raises(SignatureError, match="invalid signature by witness"):
        open_note(note, [Verifier.from_key(VKEY), other.verifier()])


@pytest.mark.parametrize(
    ("note", "reason"),
    [
        (TEXT + SIG_LINE, "no blank line"),  # no blank line: last \n\n is inside nothing
        (TEXT + "\n", "no signature"),
        (NOTE[:-1], "no signature"),
        (NOTE + "\n", "no signature"),
        (TEXT + "\n" + SIG_LINE.replace("— ", "- "), "not a signature line"),
        (TEXT + "\n" + SIG_LINE.replace("— ", "—  "), "malformed signature line"),
        (TEXT + "\n" + SIG_LINE.replace("=\n", "\n"), "malformed signature line"),
        (TEXT + "\n" + SIG_LINE.replace("x08", "x0!"), "malformed signature line"),
        (TEXT + "\n" + SIG_LINE.replace("Neumann ", "Neumann  "), "malformed signature line"),
        (TEXT + "\n" + SIG_LINE.replace("Peter", "Pe+ter"), "malformed signature line"),
        (TEXT + "\n— PeterNeumann AAAA\n", "too short"),
        (TEXT.replace("problem,", "problem,\t") + "\n" + SIG_LINE, "control character"),
        (NOTE.replace("\n", "\r\n"), "control character"),
        (NOTE + SIG_LINE, "signs more than once"),
        (b"\xff" + NOTE.encode(), "not UTF-8"),
    ],
)
def test_malformed_notes_are_rejected(note, reason):
    with pytest.raises(SignatureError, match=reason):
        open_note(note, [Verifier.from_key(VKEY)])


def test_non_canonical_base64_is_rejected():
    # Same bytes, but the last base64 character carries non-zero padding bits.
    line = SIG_LINE.replace("AM=\n", "AN=\n")
    with pytest.raises(SignatureError, match="malformed signature line"):
        open_note(TEXT + "\n" + line, [Verifier.from_key(VKEY)])


def test_too_many_signatures():
    signers = [Signer.generate(f"s{i}") for i in range(MAX_SIGNATURES + 1)]
    text = "t\n"
    note = sign_note(text, signers[:MAX_SIGNATURES])
    assert len(split_note(note)[1]) == MAX_SIGNATURES
    with pytest.raises(SignatureError, match="more than"):
        append_signatures(note, [signers[-1].signature(text)])


def test_text_with_blank_lines_splits_at_the_last_one():
    signer = Signer.generate("k")
    text = "a\n\nb\n\n"
    note = open_note(signer.sign(text), [signer.verifier()])
    assert note.text == text


def test_signing_rejects_bad_text_and_names():
    signer = Signer.generate("k")
    with pytest.raises(ValueError, match="newline"):
        signer.sign("no newline")
    with pytest.raises(ValueError, match="control"):
        signer.sign("tab\there\n")
    with pytest.raises(ValueError, match="duplicate signer"):
        sign_note("x\n", [signer, signer])
    for name in ["", "has space", "has+plus", "nbsp\u00a0"]:
        with pytest.raises(ValueError, match="invalid key name"):
            Signer.generate(name)


@pytest.mark.parametrize(
    "vkey",
    [
        "PeterNeumann+c74f20a3",
        "PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # wrong key id
        "PeterNeumann+C74F20A3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # upper-case hex
        "PeterNeumann+c74f20a3+BBpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # key type
        "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10",  # short
        "Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
    ],
)
def test_malformed_verifier_keys(vkey):
    with pytest.raises(ValueError):
        Verifier.from_key(vkey)


@pytest.mark.parametrize(
    "skey",
    [
        SKEY.removeprefix("PRIVATE+KEY+"),
        SKEY.replace("c74f20a3", "c74f20a4"),
        SKEY.replace("+AYEK", "+AoEK"),  # key type 0x02
        SKEY[:-4],
    ],
)
def test_malformed_private_keys(skey):
    with pytest.raises(ValueError):
        Signer.from_key(skey)


def test_duplicate_verifiers_are_a_caller_error():
    verifier = Verifier.from_key(VKEY)
    with pytest.raises(ValueError):
        open_note(NOTE, [verifier, Verifier.from_key(VKEY)])
