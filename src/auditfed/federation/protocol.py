"""The node-to-hub wire protocol and the hub's checks, as pure functions.

``POST /v1/federation/nodes/{name}/entries`` carries::

    {"start": P,                      # index of the first entry
     "leaves": [leaf data],           # entries P, P+1, ... (may be empty: a heartbeat)
     "checkpoint": "<signed note>",   # the node's checkpoint (C2SP tlog-checkpoint), size S
     "proof": [base64],               # RFC 9162 consistency proof from E = P+len to S
     "prior": [base64]}               # RFC 9162 consistency proof from C to S, where C is
                                      # the size of the last checkpoint the hub accepted

The hub holds, per node, the compact range of the entries it accepted (size P) and
the last checkpoint it accepted (size C >= P). A batch is accepted when

1. the checkpoint is signed by the node's enrolled key (C2SP signed-note, Ed25519);
2. it does not go back: S > C with a valid ``prior`` proof, or S == C with the same
   root (otherwise the node shows two inconsistent views of its log: *split view*);
3. the entries start at P (a start beyond P *skips indexes*; a start before P is a
   re-send and its already accepted part is dropped);
4. the tree rebuilt from the compact range and the new entries' leaf hashes, of size
   E, is a prefix of the checkpoint's tree: equal roots when E == S, else a valid
   ``proof`` (otherwise the entries are not the node's signed history: *rewritten*).

Since both the old checkpoint and the rebuilt tree are prefixes of the new signed
tree, everything the hub holds of a node stays mutually consistent. Check 1
(:func:`verify_signed`) needs only the node's key, so the hub makes it while it
decodes a batch, for all batches in flight at once; checks 2-4
(:func:`verify_extension`) need the node's state, one batch after the other.

A node may send a batch before the hub answered the previous one (pipelining). It
then names the batch's start in the header ``Auditfed-Follows``, and its ``prior``
proof starts at the previous batch's checkpoint (the one the hub will have accepted
by then). The hub checks it, with all four checks, once the previous batch is
checked; if that one fails or does not arrive, this one fails too (503, no alert),
and the node re-sends from the hub's position.

An entry's leaf data travels in ``leaves`` as a JSON string holding it as text when
it is UTF-8 (the canonical JSON of every event is), and as ``{"base64": "..."}``
otherwise (:func:`encode_entry`): text costs a third less than base64 on the wire
and much less CPU at both ends, and the bytes it stands for are exactly its UTF-8
encoding. The first protocol sent ``entries``, base64 strings; a hub still takes
them, so that it can be upgraded before its nodes (a base64 string read as text
would not rebuild the node's tree: a false alarm of rewritten history).
"""

from __future__ import annotations

import binascii
from dataclasses import dataclass
from hashlib import sha256

import orjson

from auditfed.errors import AuditfedError, InvalidInput, ProofError, SignatureError, VerificationError
from auditfed.event import strict_json
from auditfed.federation.compact import CompactRange
from auditfed.ledger import Checkpoint, Verifier, verify_checkpoint, verify_consistency
from auditfed.ledger.keys import b64decode_strict

__all__ = [
    "FOLLOWS_HEADER", "MAX_BATCH", "Batch", "Signed", "Violation", "decode_batch", "encode_entry",
    "parse_batch", "verify_extension", "verify_signed",
]

MAX_BATCH = 10_000
"""Most entries in one request."""

FOLLOWS_HEADER = "Auditfed-Follows"
"""Names the start of a batch sent while the node's previous batch is in flight."""


def encode_entry(data: bytes) -> str | dict[str, str]:
    """An entry's leaf data as it goes into a batch's ``leaves``."""
    try:
        return data.decode()
    except UnicodeDecodeError:
        return {"base64": binascii.b2a_base64(data, newline=False).decode()}


def _decode_entry(value: object) -> bytes:
    if type(value) is str:
        return value.encode()  # a lone surrogate (from a \uD800 escape) raises
    if type(value) is dict and value.keys() == {"base64"}:
        return _decode_base64(value["base64"])
    raise ValueError("an entry is a string or {\"base64\": ...}")


def _decode_base64(value: object) -> bytes:
    # Not ledger.keys.b64decode_strict: it re-encodes to check, and quotes the whole
    # (possibly megabytes long) text in its error.
    return binascii.a2b_base64(value, strict_mode=True)  # type: ignore[arg-type]


#: Kinds of misbehaviour; each raises an alert and refuses the node.
KINDS = ("bad_signature", "split_view", "rewritten", "skipped_indexes", "silent")


class Violation(AuditfedError):
    """A node broke a promise of its log: alert, and refuse it until an admin acts."""

    status = 409
    title = "Federation violation"

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail, kind=kind)
        self.kind = kind


@dataclass(frozen=True, slots=True)
class Batch:
    start: int
    entries: list[bytes]
    note: str
    proof: list[bytes]
    prior: list[bytes]


@dataclass(frozen=True, slots=True)
class Signed:
    """A batch whose checkpoint is signed by the node's key, its entries reduced to
    their leaf hashes: what checks 2-4 need."""

    start: int
    leaf_hashes: list[bytes]
    checkpoint: Checkpoint
    note: str
    proof: list[bytes]
    prior: list[bytes]


def _hashes(value: object, name: str) -> list[bytes]:
    if not isinstance(value, list) or len(value) > 128 or not all(isinstance(h, str) for h in value):
        raise InvalidInput(f"{name} must be a list of at most 128 base64 hashes")
    try:
        return [b64decode_strict(h) for h in value]
    except (ValueError, TypeError) as exc:
        raise InvalidInput(f"{name}: {exc}") from None


def decode_batch(body: object) -> Batch:
    """Parse a request body; malformed input is a 400, never an alert."""
    if not isinstance(body, dict):
        raise InvalidInput("the body must be a JSON object")
    unknown = set(body) - {"start", "leaves", "entries", "checkpoint", "proof", "prior"}
    if unknown:
        raise InvalidInput(f"unknown fields: {', '.join(sorted(unknown))}")
    if "leaves" in body and "entries" in body:
        raise InvalidInput("a batch has leaves or (base64) entries, not both")
    member, decode = ("entries", _decode_base64) if "entries" in body else ("leaves", _decode_entry)
    start, entries, note = body.get("start"), body.get(member, []), body.get("checkpoint")
    if not isinstance(start, int) or isinstance(start, bool) or start < 0:
        raise InvalidInput("start must be a non-negative integer")
    if not isinstance(entries, list) or len(entries) > MAX_BATCH:
        raise InvalidInput(f"{member} must be a list of at most {MAX_BATCH} entries")
    if not isinstance(note, str):
        raise InvalidInput("checkpoint must be the signed checkpoint note")
    try:
        data = [decode(e) for e in entries]
    except (ValueError, TypeError) as exc:  # UnicodeEncodeError and binascii.Error too
        raise InvalidInput(f"{member}: {exc}") from None
    return Batch(start, data, note, _hashes(body.get("proof", []), "proof"),
                 _hashes(body.get("prior", []), "prior"))


def parse_batch(body: bytes) -> Batch:
    """:func:`decode_batch` of a raw request body."""
    try:
        return decode_batch(strict_json.loads(body))
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"the body is not JSON: {exc}") from None


def verify_signed(batch: Batch, verifier: Verifier) -> Signed:
    """Check 1, and the leaf hashes of the batch's entries."""
    try:
        checkpoint = verify_checkpoint(batch.note, verifier)
    except (SignatureError, VerificationError) as exc:
        raise Violation("bad_signature", f"checkpoint not signed by the enrolled key: {exc.detail}") from None
    leaf_hashes = [sha256(b"\x00" + data).digest() for data in batch.entries]
    return Signed(batch.start, leaf_hashes, checkpoint, batch.note, batch.proof, batch.prior)


def verify_extension(
    signed: Signed, compact: CompactRange, accepted: Checkpoint | None
) -> tuple[int, CompactRange]:
    """Checks 2-4 against a node's state (its compact range and last accepted
    checkpoint): how many of the batch's entries were accepted before, and the
    compact range once the others are.

    Raises :class:`Violation` for misbehaviour, :class:`InvalidInput` for a batch
    beyond its checkpoint.
    """
    checkpoint = signed.checkpoint
    if accepted is not None:
        _verify_not_back(checkpoint, accepted, signed.prior)
    position, size = compact.size, checkpoint.size
    if signed.start > position:
        raise Violation("skipped_indexes", f"entries start at {signed.start} but the next expected "
                        f"index is {position}: indexes {position}..{signed.start - 1} were skipped")
    skip = position - signed.start
    new = signed.leaf_hashes[skip:]
    end = position + len(new)
    if end > size:
        raise InvalidInput(f"entries reach index {end - 1}, beyond the checkpoint's size {size}")
    rebuilt = compact.copy()
    rebuilt.extend(new)
    if end > 0:
        try:
            verify_consistency(end, size, rebuilt.root(), checkpoint.root, signed.proof)
        except ProofError as exc:
            raise Violation("rewritten", f"entries 0..{end - 1} do not rebuild the node's signed tree "
                            f"of size {size}: {exc.detail}") from None
    return skip, rebuilt


def _verify_not_back(checkpoint: Checkpoint, accepted: Checkpoint, prior: list[bytes]) -> None:
    """Check 2."""
    size, root = checkpoint.size, checkpoint.root
    if size < accepted.size:
        raise Violation("split_view", f"checkpoint of size {size} is older than the accepted "
                        f"checkpoint of size {accepted.size}: the log went back")
    if size == accepted.size and root != accepted.root:
        raise Violation("split_view", f"two different checkpoints of size {size}: the node's "
                        "history was rewritten or it shows a split view")
    if size > accepted.size and accepted.size > 0:
        try:
            verify_consistency(accepted.size, size, accepted.root, root, prior)
        except ProofError as exc:
            raise Violation("split_view", f"checkpoint of size {size} is not consistent with the "
                            f"accepted checkpoint of size {accepted.size}: the node's history was "
                            f"rewritten or it shows a split view ({exc.detail})") from None
