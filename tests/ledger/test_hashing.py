from hashlib import sha256

import pytest

from auditfed.ledger import EMPTY_ROOT, HASH_SIZE, leaf_hash, node_hash
from auditfed.ledger.hashing import fold_subtrees, hash_up


def test_domain_separated_hashes():
    assert HASH_SIZE == 32
    assert EMPTY_ROOT.hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert leaf_hash(b"abc") == sha256(b"\x00abc").digest()
    assert node_hash(b"L" * 32, b"R" * 32) == sha256(b"\x01" + b"L" * 32 + b"R" * 32).digest()
    # The RFC 6962 reference: leaf hash of the empty leaf.
    assert leaf_hash(b"").hex() == ("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d")
    assert leaf_hash(b"\x00").hex() == ("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7")


def test_fold_subtrees_hashes_right_to_left():
    a, b, c = (bytes([i]) * 32 for i in range(3))
    assert fold_subtrees([]) == EMPTY_ROOT
    assert fold_subtrees([a]) == a
    assert fold_subtrees([a, b, c]) == node_hash(a, node_hash(b, c))


def test_hash_up_hashes_each_run_to_its_root():
    a, b, c, d = (bytes([i]) * 32 for i in range(4))
    assert hash_up(a + b + c + d, 0) == a + b + c + d
    assert hash_up(a + b + c + d, 1) == node_hash(a, b) + node_hash(c, d)
    assert hash_up(a + b + c + d, 2) == node_hash(node_hash(a, b), node_hash(c, d))
    with pytest.raises(ValueError, match="whole runs"):
        hash_up(a + b + c, 1)
