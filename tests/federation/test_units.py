"""The pure parts: compact ranges, the hub's envelope, the batch checks."""

from __future__ import annotations

import base64
from dataclasses import replace

import orjson
import pytest

from auditfed.errors import InvalidInput
from auditfed.event.canonical import canonical_event_bytes
from auditfed.federation import CompactRange, Violation, node_leaf_data, unwrap, wrap
from auditfed.federation.protocol import (
    Batch,
    decode_batch,
    encode_entry,
    parse_batch,
    verify_extension,
    verify_signed,
)
from auditfed.ledger import (
    Checkpoint,
    Signer,
    TreeAppender,
    Verifier,
    consistency_proof,
    leaf_hash,
    sign_checkpoint,
)


def _leaves(n: int, tag: str = "e") -> list[bytes]:
    return [canonical_event_bytes({"id": f"{tag}{i}", "action": "a.b", "outcome": "success",
                                   "actor": {"id": "u"}, "source": {"service": "s"},
                                   "time": "2026-01-01T00:00:00.000000Z"}) for i in range(n)]


class Log:
    """A node's log in memory: leaves, tiles, signed checkpoints and proofs."""

    def __init__(self, name: str = "node-a") -> None:
        self.signer = Signer.generate(name)
        self.tree = TreeAppender()
        self.tiles: dict[tuple[int, int], bytes] = {}
        self.data: list[bytes] = []

    def read_tiles(self, keys):  # TileReader
        return {k: self.tiles[k] for k in keys if k in self.tiles}

    def add(self, items: list[bytes]) -> None:
        self.data += items
        self.tree.extend(leaf_hash(d) for d in items)
        self.tiles.update(self.tree.take_dirty_tiles())

    def note(self) -> str:
        return sign_checkpoint(Checkpoint(self.signer.name, self.tree.size, self.tree.root()), self.signer)

    def batch(self, start: int, end: int, prior: int = 0) -> Batch:
        size = self.tree.size
        proof = consistency_proof(end, size, self) if 0 < end < size else []
        prior_proof = consistency_proof(prior, size, self) if 0 < prior < size else []
        return Batch(start, self.data[start:end], self.note(), proof, prior_proof)


@pytest.mark.parametrize("size", [0, 1, 2, 3, 7, 8, 255, 256, 257, 1000])
def test_compact_range_matches_tree(size: int) -> None:
    tree, compact = TreeAppender(), CompactRange()
    for data in _leaves(size):
        tree.append(leaf_hash(data))
        compact.append(leaf_hash(data))
    assert compact.root() == tree.root()
    assert CompactRange.decode(size, compact.encode()).root() == tree.root()


def test_envelope_round_trip() -> None:
    plain = orjson.loads(_leaves(1)[0])
    with_node = {**plain, "source": {"service": "s", "node": "other"}}
    shadowing = {**plain, "attributes": {"federation": {"x": 1}, "k": "v"}}
    for event in (plain, with_node, shadowing):
        data = canonical_event_bytes(event)
        wrapped, hub_data = wrap(data, "eu-prod", 41)
        assert wrapped["id"] == f"eu-prod:{event['id']}"
        assert wrapped["source"]["node"] == "eu-prod"
        origin = wrapped["attributes"]["federation"]
        assert origin["node_index"] == 41
        assert origin["node_leaf_hash"] == base64.b64encode(leaf_hash(data)).decode()
        assert node_leaf_data(orjson.loads(hub_data)) == data


def test_envelope_keeps_what_is_not_an_event() -> None:
    wrapped, _ = wrap(b"not json at all", "eu-prod", 3)
    assert wrapped["action"] == "federation.entry"
    assert unwrap(wrapped)[1] == b"not json at all"


@pytest.mark.parametrize(("data", "as_text"), [
    (_leaves(1)[0], True), ("naïve ☃ 𝄞 \\ \" end".encode(), True), (b"", True),
    (b"a control \x01 byte\nand a line", True), (b"\xff\xfe not UTF-8", False),
])
def test_entries_travel_as_text_or_base64_and_arrive_byte_exact(data: bytes, as_text: bool) -> None:
    encoded = encode_entry(data)
    assert isinstance(encoded, str) == as_text
    body = orjson.dumps({"start": 0, "leaves": [encoded], "checkpoint": "note"})
    assert parse_batch(body).entries == [data]


def test_base64_entries_of_the_first_protocol_are_still_taken() -> None:
    """A hub upgraded before its nodes must not read their base64 as text (a false alarm)."""
    data = [_leaves(1)[0], b"\xff binary"]
    old = {"start": 0, "entries": [base64.b64encode(d).decode() for d in data], "checkpoint": "note"}
    assert decode_batch(old).entries == data
    with pytest.raises(InvalidInput, match="not both"):
        decode_batch({**old, "leaves": []})
    with pytest.raises(InvalidInput, match="entries"):
        decode_batch({**old, "entries": ["not base64!"]})


@pytest.mark.parametrize("entry", [5, None, {"base64": "!!"}, {"b64": "eA=="}, {"base64": 1},
                                   "\ud800", {"base64": "eA==", "x": 1}])
def test_a_malformed_entry_is_refused_as_bad_input(entry: object) -> None:
    with pytest.raises(InvalidInput, match="leaves"):
        decode_batch({"start": 0, "leaves": [entry], "checkpoint": "note"})


def verify(batch: Batch, verifier: Verifier, compact: CompactRange,
           accepted: Checkpoint | None) -> tuple[int, CompactRange, Checkpoint]:
    """All four checks: entries already accepted, the range after the batch, its checkpoint."""
    signed = verify_signed(batch, verifier)
    skip, rebuilt = verify_extension(signed, compact, accepted)
    return skip, rebuilt, signed.checkpoint


def test_batches_and_violations() -> None:
    log = Log()
    log.add(_leaves(5))
    verifier = log.signer.verifier()
    _, compact, accepted = verify(log.batch(0, 3), verifier, CompactRange(), None)
    assert compact.size == 3 and accepted.size == 5
    # a re-send of what was accepted, plus more, is trimmed
    skip, again, _ = verify(log.batch(1, 5), verifier, compact, accepted)
    assert skip == 2 and again.size == 5
    # skipped indexes
    with pytest.raises(Violation) as info:
        verify(log.batch(4, 5), verifier, compact, accepted)
    assert info.value.kind == "skipped_indexes"
    # entries that are not the signed history
    forged = Batch(3, [b"forged", log.data[4]], log.note(), [], [])
    with pytest.raises(Violation) as info:
        verify(forged, verifier, compact, accepted)
    assert info.value.kind == "rewritten"
    # another key
    other = Log("node-a")
    other.add(_leaves(5))
    with pytest.raises(Violation) as info:
        verify(other.batch(3, 5), verifier, compact, accepted)
    assert info.value.kind == "bad_signature"
    # a fork: the same size, another root; or a bigger tree that does not extend the old one
    fork = Log()
    fork.signer = log.signer
    fork.add(_leaves(5, "x"))
    with pytest.raises(Violation) as info:
        verify(fork.batch(3, 3), verifier, compact, accepted)
    assert info.value.kind == "split_view"
    fork.add(_leaves(3, "y"))
    with pytest.raises(Violation) as info:
        verify(fork.batch(3, 3, prior=5), verifier, compact, accepted)
    assert info.value.kind == "split_view"
    # the honest log grows: accepted with a prior proof
    log.add(_leaves(3, "z"))
    _, grown, _ = verify(log.batch(3, 8, prior=5), verifier, compact, accepted)
    assert grown.root() == log.tree.root()


def test_a_forwarded_batch_stays_under_the_byte_cap() -> None:
    from auditfed.federation.forwarder import MAX_BATCH_BYTES, _fitting

    def fitting(datas: list[bytes]) -> int:
        return _fitting([encode_entry(d) for d in datas], [len(d) for d in datas], MAX_BATCH_BYTES)

    assert fitting([b"x" * 3_000_000] * 5) == 2  # 3 MB of text each: 2 fit in 8 MiB, 3 do not
    assert fitting([b"\xff" * 2_500_000] * 5) == 2  # 3.3 MB of base64 each
    assert fitting([b'"' * 3_000_000] * 5) == 1  # escaped: 6 MB each
    assert fitting([b"\x01" * 1_000_000] * 5) == 1  # escaped as \u0001: 6 MB each
    assert fitting([b"y" * 20_000_000]) == 1  # one is always sent
    assert fitting([b"z" * 100] * 2000) == 2000


def test_a_node_record_advances_only_from_where_the_batch_was_checked(store, tmp_path) -> None:
    """The hub records a node's new state with one conditional update: an admin's
    refusal is kept, an admin's re-baseline (position moved) wins over a batch that
    was in flight."""
    from auditfed.federation.hub import enrol_node, reinstate_node
    from auditfed.store import open_store

    url = store or f"sqlite:///{tmp_path / 'auditfed.db'}"
    db = open_store(url)
    try:
        key = Signer.generate("auditfed.test/eu").verifier_key()
        enrol_node(db, "eu", key)
        assert db.advance_federation_node("eu", 0, 10, b"\x01" * 64, "note-10", "t1")
        record = db.get_federation_node("eu")
        assert (record.position, record.compact, record.checkpoint, record.last_seen) == (
            10, b"\x01" * 64, "note-10", "t1")

        db.put_federation_node(replace(record, status="refused", reason="split_view: test"))
        assert db.advance_federation_node("eu", 10, 20, b"\x02" * 32, "note-20", "t2")
        record = db.get_federation_node("eu")
        assert (record.position, record.status, record.reason) == (20, "refused", "split_view: test")

        reinstate_node(db, "eu", rebaseline=True)  # position back to 0
        assert not db.advance_federation_node("eu", 20, 30, b"\x03" * 32, "note-30", "t3")
        record = db.get_federation_node("eu")
        assert (record.position, record.status, record.checkpoint) == (0, "active", None)
    finally:
        db.close()
