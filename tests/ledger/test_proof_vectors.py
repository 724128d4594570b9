"""Every transparency-dev/merkle test vector, and the hand-written RFC 6962 vectors."""

import base64
import json
from pathlib import Path

import pytest

from auditfed.errors import ProofError
from auditfed.ledger import (
    leaf_hash,
    root_from_consistency,
    root_from_inclusion,
    verify_consistency,
    verify_inclusion,
)

from .reference import RFC6962_LEAVES, RFC6962_ROOTS

DATA = Path(__file__).parents[1] / "data" / "merkle-testdata"
INCLUSION = sorted((DATA / "inclusion").rglob("*.json"))
CONSISTENCY = sorted((DATA / "consistency").rglob("*.json"))


def _b64(value: str | None) -> bytes:
    return base64.b64decode(value or "")


def _proof(values: list[str] | None) -> list[bytes]:
    return [_b64(v) for v in values or []]


def _id(path: Path) -> str:
    return str(path.relative_to(DATA))


def test_all_vectors_are_present():
    assert len(INCLUSION) > 90
    assert len(CONSISTENCY) > 90


@pytest.mark.parametrize("path", INCLUSION, ids=_id)
def test_inclusion_vector(path: Path):
    v = json.loads(path.read_text())
    args = (_b64(v["leafHash"]), v["leafIdx"], v["treeSize"], _proof(v["proof"]), _b64(v["root"]))
    if v["wantErr"]:
        with pytest.raises(ProofError):
            verify_inclusion(*args)
    else:
        verify_inclusion(*args)


@pytest.mark.parametrize("path", CONSISTENCY, ids=_id)
def test_consistency_vector(path: Path):
    v = json.loads(path.read_text())
    args = (v["size1"], v["size2"], _b64(v["root1"]), _b64(v["root2"]), _proof(v["proof"]))
    if v["wantErr"]:
        with pytest.raises(ProofError):
            verify_consistency(*args)
    else:
        verify_consistency(*args)


def _h(*hexes: str) -> list[bytes]:
    return [bytes.fromhex(h) for h in hexes]


# (leaf index, tree size, proof) over the RFC 6962 reference tree (transparency-dev/merkle).
INCLUSION_PROOFS = [
    (0, 1, []),
    (
        0,
        8,
        _h(
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ),
    ),
    (
        5,
        8,
        _h(
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ),
    ),
    (2, 3, _h("fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125")),
    (
        1,
        5,
        _h(
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ),
    ),
]

CONSISTENCY_PROOFS = [
    (1, 1, []),
    (
        1,
        8,
        _h(
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ),
    ),
    (
        6,
        8,
        _h(
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ),
    ),
    (
        2,
        5,
        _h(
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ),
    ),
    (
        6,
        7,
        _h(
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ),
    ),
]


@pytest.mark.parametrize(("index", "size", "proof"), INCLUSION_PROOFS)
def test_rfc6962_inclusion_proofs(index: int, size: int, proof: list[bytes]):
    leaf = leaf_hash(RFC6962_LEAVES[index])
    root = RFC6962_ROOTS[size]
    verify_inclusion(leaf, index, size, proof, root)
    assert root_from_inclusion(leaf, index, size, proof) == root
    for bad_index in {index - 1, index + 1, index ^ 2} - {index}:
        with pytest.raises(ProofError):
            verify_inclusion(leaf, bad_index, size, proof, root)
    for bad_size in {size * 2, size // 2} - {size}:
        with pytest.raises(ProofError):
            verify_inclusion(leaf, index, bad_size, proof, root)
    with pytest.raises(ProofError, match="leaf hash has 9 bytes"):
        verify_inclusion(b"WrongLeaf", index, size, proof, root)
    with pytest.raises(ProofError, match="too long"):
        verify_inclusion(leaf, index, size, [*proof, root], root)
    if proof:
        with pytest.raises(ProofError, match="too short"):
            verify_inclusion(leaf, index, size, proof[:-1], root)


@pytest.mark.parametrize(("old", "new", "proof"), CONSISTENCY_PROOFS)
def test_rfc6962_consistency_proofs(old: int, new: int, proof: list[bytes]):
    old_root, new_root = RFC6962_ROOTS[old], RFC6962_ROOTS[new]
    verify_consistency(old, new, old_root, new_root, proof)
    assert root_from_consistency(old, new, old_root, proof) == new_root
    if not proof:
        return
    probes = [
        (old - 1, new, old_root, new_root, proof),
        (old + 1, new, old_root, new_root, proof),
        (old ^ 2, new, old_root, new_root, proof),
        (old, new * 2, old_root, new_root, proof),
        (old, new // 2, old_root, new_root, proof),
        (old, new, new_root, old_root, proof),
        (old, new, old_root, new_root, []),
        (old, new, old_root, new_root, [*proof, old_root]),
        (old, new, old_root, new_root, [new_root, *proof]),
        (old, new, old_root, new_root, proof[:-1]),
    ]
    for probe in probes:
        with pytest.raises(ProofError):
            verify_consistency(*probe)


def test_error_messages_are_precise():
    with pytest.raises(ProofError, match="leaf index 3 is not in a tree of size 3"):
        verify_inclusion(b"\0" * 32, 3, 3, [], b"\0" * 32)
    with pytest.raises(ProofError, match="proof hash 1 has 31 bytes"):
        verify_inclusion(b"\0" * 32, 0, 4, [b"\0" * 32, b"\0" * 31], b"\0" * 32)
    with pytest.raises(ProofError, match="empty tree is meaningless"):
        verify_consistency(0, 5, RFC6962_ROOTS[0], RFC6962_ROOTS[5], [])
    with pytest.raises(ProofError, match="old root mismatch"):
        verify_consistency(6, 8, RFC6962_ROOTS[5], RFC6962_ROOTS[8], CONSISTENCY_PROOFS[2][2])
    with pytest.raises(ProofError, match="new root mismatch"):
        verify_consistency(2, 5, RFC6962_ROOTS[2], RFC6962_ROOTS[4], CONSISTENCY_PROOFS[3][2])
    verify_consistency(0, 0, RFC6962_ROOTS[0], RFC6962_ROOTS[0], [])
