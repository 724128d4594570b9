"""The log's public face: checkpoints, key, entries and RFC 9162 proofs.

The checkpoint and the verifier key are public (anyone may verify); entries and
proofs reveal events and need an auditor or admin token.
"""

from __future__ import annotations

import base64

import orjson
from fastapi import APIRouter, Query, Request
from starlette.responses import PlainTextResponse, Response

from auditfed.api.deps import MAX_INDEX, node_of, reader
from auditfed.api.problems import problem_responses
from auditfed.api.responses import JSON
from auditfed.errors import Forbidden, Gone, InvalidInput, NotFound
from auditfed.ledger import consistency_proof, inclusion_proof

router = APIRouter(tags=["log"])

MAX_ENTRIES = 1000


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@router.get("/v1/log/checkpoint", summary="A signed checkpoint (C2SP signed note)", response_class=PlainTextResponse)
async def get_checkpoint(
    request: Request,
    size: int | None = Query(None, ge=0, le=MAX_INDEX, description="the checkpoint signed at this size"),
    cosigned: bool = Query(False, description="the latest checkpoint witnesses cosigned, with "
                           "their cosignature lines (federation)"),
) -> Response:
    """The latest checkpoint, signed now if the log grew since the last one; or, with
    ``size``, the checkpoint published at exactly that size (every one is kept)."""
    node = node_of(request)
    if cosigned:
        from auditfed.federation.service import cosigned_checkpoint

        return PlainTextResponse(cosigned_checkpoint(node.store), headers={"Cache-Control": "no-store"})
    if size is None:
        record = await node.sequencer.checkpoint()
    else:
        record = node.store.checkpoint_at_least(size)
        if record is None or record.size != size:
            raise NotFound(f"no checkpoint was signed at size {size}")
    return PlainTextResponse(record.note, headers={"Cache-Control": "no-store"})


@router.get("/v1/log/key", summary="The log's verifier key", response_class=PlainTextResponse)
def get_key(request: Request) -> Response:
    return PlainTextResponse(node_of(request).signer.verifier_key() + "\n")


@router.get("/v1/log/entries", summary="Leaf data of entries [start, end)", responses=problem_responses(410))
def get_entries(
    request: Request,
    start: int = Query(ge=0, le=MAX_INDEX),
    end: int = Query(gt=0, le=MAX_INDEX),
) -> Response:
    """A server may return fewer entries than asked (at most 1,000, at most
    ``max_response_bytes`` of entry data but at least one entry); clients page on.

    Not for scoped auditors: a raw range would show events outside their scope."""
    caller = reader(request, "audit.log.entries")
    if caller.scoped:
        raise Forbidden("a scoped token cannot read raw log ranges; use /v1/events")
    size = node_of(request).sequencer.size
    if start >= end:
        raise InvalidInput("start must be below end (end is exclusive)")
    if end > size:
        raise InvalidInput(f"end {end} is beyond the log's size {size}")
    store = node_of(request).store
    if start < (retained_from := store.retained_from()):
        raise Gone(f"entries below {retained_from} were removed by retention; their leaf "
                   "hashes remain in the tree", retained_from=retained_from)
    rows = store.entries_within(start, min(end, start + MAX_ENTRIES), node_of(request).settings.max_response_bytes)
    return JSON({"entries": [{"index": i, "data": _b64(data)} for i, data in rows]})


@router.get("/v1/log/proof/inclusion", summary="RFC 9162 inclusion proof")
def get_inclusion_proof(
    request: Request,
    index: int = Query(ge=0, le=MAX_INDEX),
    size: int | None = Query(None, ge=1, le=MAX_INDEX, description="tree size; default: latest checkpoint"),
) -> Response:
    caller = reader(request, "audit.proof.inclusion")
    node = node_of(request)
    if size is None and index >= _tree_size(node, None):
        node.sequencer.checkpoint_now()  # prove against a checkpoint that holds the entry
    size = _tree_size(node, size)
    if index >= size:
        raise InvalidInput(f"index {index} is not in a tree of size {size}")
    if caller.scoped:
        rows = node.store.entries(index, index + 1)
        if not rows or not caller.may_see(orjson.loads(rows[0][1])):
            # A removed entry's scope cannot be told: not for a scoped token.
            raise NotFound(f"no event at index {index} in this token's scope")
    hashes = inclusion_proof(index, size, node.store)
    return JSON({"index": index, "size": size, "hashes": [_b64(h) for h in hashes]})


@router.get("/v1/log/proof/consistency", summary="RFC 9162 consistency proof")
def get_consistency_proof(
    request: Request,
    old: int = Query(ge=0, le=MAX_INDEX),
    new: int = Query(ge=0, le=MAX_INDEX),
) -> Response:
    reader(request, "audit.proof.consistency")
    node = node_of(request)
    _tree_size(node, new)
    if old > new:
        raise InvalidInput(f"old size {old} is larger than new size {new}")
    if old == 0 < new:
        raise InvalidInput("there is no consistency proof from the empty tree: ask from old size 1 or more")
    hashes = consistency_proof(old, new, node.store)
    return JSON({"old": old, "new": new, "hashes": [_b64(h) for h in hashes]})


def _tree_size(node: object, size: int | None) -> int:
    sequencer = node.sequencer  # type: ignore[attr-defined]
    committed = sequencer.size
    if size is None:
        latest = sequencer.latest_checkpoint
        return latest.size if latest else committed
    if size > committed:
        raise InvalidInput(f"size {size} is beyond the log's size {committed}")
    return size
