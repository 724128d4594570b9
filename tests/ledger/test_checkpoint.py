"""C2SP tlog-checkpoint: body format, strict parsing, signing by the origin's key."""

from __future__ import annotations

import base64

import pytest

from auditfed.errors import SignatureError, VerificationError
from auditfed.ledger import Checkpoint, Signer, sign_checkpoint, verify_checkpoint

# The example checkpoint of the C2SP tlog-checkpoint specification.
SPEC_BODY = "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
ROOT = bytes(range(32))


def test_parse_the_spec_example():
    cp = Checkpoint.parse(SPEC_BODY)
    assert cp.origin == "example.com/behind-the-sofa"
    assert cp.size == 20852163
    assert base64.b64encode(cp.root).decode() == "CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I="
    assert cp.extensions == ()
    assert cp.body() == SPEC_BODY


def test_body_and_round_trip_with_extensions():
    cp = Checkpoint("auditfed.example/log", 0, ROOT, ("ext one", "ext two"))
    body = cp.body()
    root_b64 = base64.b64encode(ROOT).decode()
    assert body == f"auditfed.example/log\n0\n{root_b64}\next one\next two\n"
    assert Checkpoint.parse(body) == cp


@pytest.mark.parametrize(
    "body",
    [
        "",
        "\n",
        "origin\n5\n",
        "origin\n5\n" + base64.b64encode(ROOT).decode(),  # no final newline
        "\n5\n" + base64.b64encode(ROOT).decode() + "\n",  # empty origin
        "origin\n05\n" + base64.b64encode(ROOT).decode() + "\n",
        "origin\n+5\n" + base64.b64encode(ROOT).decode() + "\n",
        "origin\n-5\n" + base64.b64encode(ROOT).decode() + "\n",
        "origin\n 5\n" + base64.b64encode(ROOT).decode() + "\n",
        "origin\n5 \n" + base64.b64encode(ROOT).decode() + "\n",
        "origin\n\u0665\n" + base64.b64encode(ROOT).decode() + "\n",  # Arabic-Indic five
        "origin\n1_000\n" + base64.b64encode(ROOT).decode() + "\n",
        f"origin\n{2**63}\n" + base64.b64encode(ROOT).decode() + "\n",
        "origin\n5\n" + base64.b64encode(ROOT[:31]).decode() + "\n",
        "origin\n5\n" + base64.b64encode(ROOT).decode().rstrip("=") + "\n",
        "origin\n5\n" + base64.urlsafe_b64encode(b"\xff" * 32).decode() + "\n",
        "origin\n5\n" + base64.b64encode(ROOT).decode() + "\n\n",  # empty extension line
        "origin\n5\n" + base64.b64encode(ROOT).decode() + "\next\n\n",
    ],
)
def test_strict_parsing(body):
    with pytest.raises(VerificationError, match="malformed checkpoint"):
        Checkpoint.parse(body)


def test_constructor_validates():
    with pytest.raises(ValueError):
        Checkpoint("", 1, ROOT)
    with pytest.raises(ValueError):
        Checkpoint("a\nb", 1, ROOT)
    with pytest.raises(ValueError):
        Checkpoint("o", -1, ROOT)
    with pytest.raises(ValueError):
        Checkpoint("o", 1, ROOT[:31])
    with pytest.raises(ValueError):
        Checkpoint("o", 1, ROOT, ("",))


def test_sign_and_verify():
    signer = Signer.generate("auditfed.example/log")
    cp = Checkpoint("auditfed.example/log", 42, ROOT)
    note = sign_checkpoint(cp, signer)
    assert note.startswith(cp.body() + "\n— auditfed.example/log ")
    assert verify_checkpoint(note, signer.verifier()) == cp


def test_the_signing_key_must_be_named_after_the_origin():
    signer = Signer.generate("other.example/log")
    cp = Checkpoint("auditfed.example/log", 42, ROOT)
    with pytest.raises(ValueError):
        sign_checkpoint(cp, signer)
    note = signer.sign(cp.body())
    with pytest.raises(VerificationError, match="origin"):
        verify_checkpoint(note, signer.verifier())


def test_verify_rejects_other_keys_and_tampering():
    signer = Signer.generate("log")
    note = sign_checkpoint(Checkpoint("log", 7, ROOT), signer)
    with pytest.raises(SignatureError):
        verify_checkpoint(note, Signer.generate("log").verifier())
    with pytest.raises(SignatureError):
        verify_checkpoint(note.replace("\n7\n", "\n8\n"), signer.verifier())


def test_signed_note_that_is_not_a_checkpoint():
    signer = Signer.generate("log")
    with pytest.raises(VerificationError, match="malformed checkpoint"):
        verify_checkpoint(signer.sign("log\nseven\nroot\n"), signer.verifier())
