"""Evidence bundles: query results an auditor verifies offline, without trusting the server.

One file, JSON Lines (``.afev.jsonl``; format in docs/evidence.md):

1. a header — format ``auditfed-evidence/v1``, the query, the export time, the log's
   origin and verifier key, ONE signed checkpoint (C2SP tlog-checkpoint note) and
   optional RFC 9162 consistency proofs from older tree sizes to it;
2. one line per matching event — its log index, leaf data (the RFC 8785 canonical
   event bytes, base64), leaf hash, and a C2SP ``tlog-proof`` (``c2sp.org/tlog-proof@v1``:
   index, RFC 6962 inclusion proof, the checkpoint verbatim) against that checkpoint;
3. a trailer with the number of entries (a cut-off file is detected).

:func:`iter_bundle` / :func:`export` write it streaming: the store is read page by
page in log order, proofs come from the stored tiles through a small cache
(:class:`ProofSource`), so memory stays constant however many events match.

:func:`verify` checks a bundle with nothing but the trusted verifier key: the
checkpoint's Ed25519 signature, every entry's leaf hash and inclusion proof, optional
consistency with a checkpoint the auditor pinned. Every fault is reported with the part
it is in (``key``, ``checkpoint``, ``entry`` N with field ``data`` / ``leaf_hash`` /
``proof``, ``consistency``, ``trailer``).
"""

from __future__ import annotations

import binascii
import contextlib
import gc
import hashlib
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import orjson

from auditfed.errors import AuditfedError, InvalidInput
from auditfed.event.model import format_time
from auditfed.ledger import Checkpoint, TileReader, Verifier, consistency_proof, verify_checkpoint, verify_consistency
from auditfed.ledger.hashing import HASH_SIZE, fold_subtrees
from auditfed.ledger.note import split_note
from auditfed.ledger.tiles import TILE_HEIGHT, TILE_WIDTH
from auditfed.ledger.tree import complete_subtrees, inclusion_path
from auditfed.query.reading import iter_matches
from auditfed.store.base import CheckpointRecord, Store
from auditfed.store.filters import Expr

__all__ = [
    "FORMAT",
    "TLOG_PROOF_HEADER",
    "ExportSummary",
    "Problem",
    "ProofSource",
    "VerifyReport",
    "export",
    "iter_bundle",
    "parse_tlog_proof",
    "tlog_proof",
    "verify",
]

FORMAT = "auditfed-evidence/v1"
TLOG_PROOF_HEADER = "c2sp.org/tlog-proof@v1"
PROGRESS_EVERY = 500
_HEADER_FIELDS = frozenset({"type", "format", "query", "exported_at", "origin", "verifier_key", "tree_size", "root",
                            "checkpoint", "consistency", "entry_proof_format"})

#: ``progress(done, total)``; ``total`` is ``None`` when unknown.
Progress = Callable[[int, int | None], None]

_sha256 = hashlib.sha256
_a2b = binascii.a2b_base64
_b2a = binascii.b2a_base64
# The last character before "=" of a canonical base64 32-byte hash has its 2 low bits clear.
_CANONICAL_LAST = frozenset("AEIMQUYcgkosw048")
# ... and before "==" (one byte in the last quantum), its 4 low bits.
_CANONICAL_LAST_OF_1 = frozenset("AQgw")


def _b64(data: bytes) -> str:
    return _b2a(data, newline=False).decode()


# --- proofs --------------------------------------------------------------------------------


class ProofSource:
    """RFC 9162 inclusion proofs for one tree size, from stored tiles, with caches.

    A tile is read once and the complete subtrees inside it are hashed once, so proofs of
    many nearby entries (an export) cost far less than :func:`inclusion_proof` each.
    Memory is bounded by ``max_tiles`` tiles (about 33 KB each).
    """

    def __init__(self, reader: TileReader, size: int, *, max_tiles: int = 512) -> None:
        self.reader = reader
        self.size = size
        self.max_tiles = max_tiles
        self._tiles: OrderedDict[tuple[int, int], list[list[bytes]]] = OrderedDict()

    def _tile_levels(self, key: tuple[int, int], data: bytes) -> list[list[bytes]]:
        hashes = [data[i:i + HASH_SIZE] for i in range(0, len(data) - len(data) % HASH_SIZE, HASH_SIZE)]
        hashes = hashes[:TILE_WIDTH]
        levels = [hashes]
        for _ in range(TILE_HEIGHT):
            below = levels[-1]
            levels.append([_sha256(b"\x01" + below[i] + below[i + 1]).digest() for i in range(0, len(below) - 1, 2)])
        return levels

    def _load(self, keys: Iterable[tuple[int, int]]) -> None:
        missing = sorted({key for key in keys if key not in self._tiles})
        if not missing:
            return
        found = self.reader.read_tiles(missing)
        for key in missing:
            data = found.get(key)
            if data is None:
                raise AuditfedError(f"tile {key} is missing from the store")
            self._tiles[key] = self._tile_levels(key, data)

    def inclusion(self, index: int) -> list[bytes]:
        """The inclusion proof of leaf ``index`` (bottom-up, as RFC 9162 §2.1.3.1)."""
        if not 0 <= index < self.size:
            raise ValueError(f"leaf index {index} is not in a tree of size {self.size}")
        parts = [complete_subtrees(start, end) for start, end in inclusion_path(index, self.size)]
        located = []
        for part in parts:
            for height, node_index in part:
                level, shift = divmod(height, TILE_HEIGHT)
                first = node_index << shift
                tile = first >> TILE_HEIGHT
                located.append(((level, tile), shift, (first % TILE_WIDTH) >> shift))
        self._load(key for key, _, _ in located)
        tiles = self._tiles
        for key, _, _ in located:
            tiles.move_to_end(key)
        proof = []
        position = 0
        for part in parts:
            hashes = []
            for _ in part:
                key, shift, offset = located[position]
                position += 1
                level_hashes = tiles[key][shift]
                if offset >= len(level_hashes):
                    raise AuditfedError(f"tile {key} is too short for the tree of size {self.size}")
                hashes.append(level_hashes[offset])
            proof.append(fold_subtrees(hashes))
        while len(tiles) > self.max_tiles:
            tiles.popitem(last=False)
        return proof


def tlog_proof(index: int, hashes: Sequence[bytes], checkpoint_note: str) -> str:
    """A C2SP tlog-proof (c2sp.org/tlog-proof@v1) without extra data."""
    lines = [TLOG_PROOF_HEADER, f"index {index}", *(_b64(h) for h in hashes)]
    return "\n".join(lines) + "\n\n" + checkpoint_note


def parse_tlog_proof(text: str) -> tuple[int, list[bytes], str, bytes | None]:
    """``(index, hashes, checkpoint note, extra)`` of a C2SP tlog-proof; strict."""
    head, sep, note = text.partition("\n\n")
    if not sep:
        raise InvalidInput("tlog-proof: no blank line before the checkpoint")
    lines = head.split("\n")
    if lines[0] != TLOG_PROOF_HEADER:
        raise InvalidInput(f"tlog-proof: first line is not {TLOG_PROOF_HEADER}")
    position = 1
    extra = None
    if len(lines) > 1 and lines[1].startswith("extra "):
        extra = _strict_b64(lines[1][6:], "extra")
        position = 2
    if len(lines) <= position or not lines[position].startswith("index "):
        raise InvalidInput("tlog-proof: no index line")
    digits = lines[position][6:]
    if not digits.isdigit() or not digits.isascii() or (digits != "0" and digits.startswith("0")):
        raise InvalidInput(f"tlog-proof: bad index {digits[:30]!r}")
    hashes = [_strict_b64(line, "proof hash") for line in lines[position + 1:]]
    if any(len(h) != HASH_SIZE for h in hashes):
        raise InvalidInput("tlog-proof: a proof hash is not 32 bytes")
    return int(digits), hashes, note, extra


def _strict_b64(text: str, what: str) -> bytes:
    try:
        data = _a2b(text, strict_mode=True)
    except (binascii.Error, ValueError):
        raise InvalidInput(f"{what} is not base64") from None
    if _b2a(data, newline=False).decode() != text:
        raise InvalidInput(f"{what} is not canonical base64")
    return data


# --- export --------------------------------------------------------------------------------


@dataclass
class ExportSummary:
    entries: int = 0
    tree_size: int = 0
    origin: str = ""
    excluded_beyond_checkpoint: int = 0
    bytes: int = 0

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def iter_bundle(
    store: Store,
    expr: Expr | None,
    *,
    query: str,
    verifier_key: str,
    checkpoint: CheckpointRecord,
    consistency_from: Sequence[int] = (),
    limit: int | None = None,
    progress: Progress | None = None,
    summary: ExportSummary | None = None,
    exported_at: str | None = None,
) -> Iterator[bytes]:
    """The bundle's lines (each ending in a newline), streamed.

    Entries are the matches of ``expr`` with ``index < checkpoint.size``, oldest first;
    at most ``limit``. ``consistency_from`` adds consistency proofs from those older
    tree sizes to the checkpoint's.
    """
    summary = summary if summary is not None else ExportSummary()
    note = checkpoint.note
    parsed = Checkpoint.parse(split_note(note)[0])
    size = parsed.size
    summary.tree_size, summary.origin = size, parsed.origin
    proofs = []
    for old in sorted(set(consistency_from)):
        if not 0 < old <= size:
            raise InvalidInput(f"consistency_from {old} must be between 1 and the checkpoint size {size}")
        proofs.append({"old_size": old, "new_size": size,
                       "hashes": [_b64(h) for h in consistency_proof(old, size, store)]})
    header = {
        "type": "header", "format": FORMAT, "query": query,
        "exported_at": exported_at or format_time(datetime.now(UTC)),
        "origin": parsed.origin, "verifier_key": verifier_key, "tree_size": size,
        "root": _b64(parsed.root), "checkpoint": note, "consistency": proofs,
        "entry_proof_format": TLOG_PROOF_HEADER,
    }
    line = orjson.dumps(header) + b"\n"
    summary.bytes += len(line)
    yield line

    source = ProofSource(store, size)  # type: ignore[arg-type]  # Store implements read_tiles
    count = 0
    tail = "\n\n" + note
    dumps = orjson.dumps
    for index, data in iter_matches(store, expr, newest_first=False):
        if index >= size:
            summary.excluded_beyond_checkpoint += 1
            continue  # pages are in index order; later ones are beyond too, but count them
        if limit is not None and count >= limit:
            break
        hashes = source.inclusion(index)
        proof = f"{TLOG_PROOF_HEADER}\nindex {index}\n" + "".join(_b64(h) + "\n" for h in hashes) + tail[1:]
        count += 1
        line = dumps({"type": "entry", "n": count, "index": index,
                      "leaf_hash": _b64(_sha256(b"\x00" + data).digest()), "data": _b64(data),
                      "proof": proof}) + b"\n"
        summary.bytes += len(line)
        summary.entries = count
        yield line
        if progress is not None and count % PROGRESS_EVERY == 0:
            progress(count, None)
    trailer = orjson.dumps({"type": "end", "entries": count}) + b"\n"
    summary.bytes += len(trailer)
    yield trailer
    if progress is not None:
        progress(count, count)


def export(
    store: Store,
    expr: Expr | None,
    out: str | Path | IO[bytes],
    *,
    query: str,
    verifier_key: str,
    checkpoint: CheckpointRecord | None = None,
    consistency_from: Sequence[int] = (),
    limit: int | None = None,
    progress: Progress | None = None,
) -> ExportSummary:
    """Write a bundle of the events matching ``expr`` to ``out`` (a path or binary file).

    ``checkpoint`` defaults to the store's latest; events logged after it are left out
    (counted in ``excluded_beyond_checkpoint``).
    """
    checkpoint = checkpoint or store.latest_checkpoint()
    if checkpoint is None:
        raise InvalidInput("the log has no signed checkpoint yet")
    summary = ExportSummary()
    lines = iter_bundle(store, expr, query=query, verifier_key=verifier_key, checkpoint=checkpoint,
                        consistency_from=consistency_from, limit=limit, progress=progress, summary=summary)
    with contextlib.ExitStack() as stack:
        target: IO[bytes] = (stack.enter_context(Path(out).open("wb")) if isinstance(out, str | Path) else out)
        buffer: list[bytes] = []
        pending = 0
        for line in lines:
            buffer.append(line)
            pending += len(line)
            if pending >= 1 << 20:
                target.write(b"".join(buffer))
                buffer, pending = [], 0
        target.write(b"".join(buffer))
    return summary


# --- verification --------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    part: str  # key | checkpoint | header | entry | consistency | pinned | trailer | file
    detail: str
    entry: int | None = None  # 1-based position of the entry in the bundle
    index: int | None = None  # its log index
    field: str | None = None  # data | leaf_hash | proof | line
    line: int | None = None

    def message(self) -> str:
        where = self.part
        if self.part == "entry":
            where = f"entry {self.entry}" + (f" (log index {self.index})" if self.index is not None else "")
            if self.field:
                where += f" {self.field}"
        elif self.line is not None:
            where += f" (line {self.line})"
        return f"{where}: {self.detail}"

    def as_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if v is not None}
        out["message"] = self.message()
        return out


@dataclass
class VerifyReport:
    ok: bool = False
    entries: int = 0
    verified: int = 0
    tree_size: int | None = None
    origin: str | None = None
    query: str | None = None
    exported_at: str | None = None
    consistency: list[dict[str, Any]] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    truncated_problems: bool = False

    def as_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k != "problems"}
        out["problems"] = [p.as_dict() for p in self.problems]
        return out


class _Stop(Exception):
    pass


class _Previous:
    """The path of the last verified entry: state and node after every step, and its proof text."""

    __slots__ = ("body", "fns", "nodes", "sns")

    def __init__(self) -> None:
        self.body = ""
        self.fns: list[int] = []
        self.sns: list[int] = []
        self.nodes: list[bytes] = []


def _root_shared(leaf: bytes, index: int, size: int, hashes: Sequence[bytes], body: str,
                 previous: _Previous) -> tuple[bytes | None, list[int], list[int], list[bytes], int]:
    """:func:`_root_from`, stopping where the path joins the previous verified entry's.

    After each step the computation continues from ``(node, fn, sn)`` with the remaining
    proof hashes only. When all four equal the previous entry's at the same step (the
    remaining hashes compared as their text), the rest of the computation is the same
    pure function of the same inputs, so it ends at the root the previous entry reached.
    Nearby entries share their upper paths: those steps cost a comparison, not a hash.
    Returns the root (or ``None`` for a proof of the wrong length), this entry's states
    and nodes, and the step it joined at (``-1``: computed to the end).
    """
    fns: list[int] = []
    sns: list[int] = []
    nodes: list[bytes] = []
    if not 0 <= index < size:
        return None, fns, sns, nodes, -1
    fn, sn = index, size - 1
    r = leaf
    sha = _sha256
    prev_nodes, prev_fns, prev_sns = previous.nodes, previous.fns, previous.sns
    known = len(prev_nodes)
    for step, p in enumerate(hashes):
        if sn == 0:
            return None, fns, sns, nodes, -1
        if fn & 1 or fn == sn:
            r = sha(b"\x01" + p + r).digest()
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = sha(b"\x01" + r + p).digest()
        fn >>= 1
        sn >>= 1
        fns.append(fn)
        sns.append(sn)
        nodes.append(r)
        if (step < known and r == prev_nodes[step] and fn == prev_fns[step] and sn == prev_sns[step]
                and body[45 * (step + 1):] == previous.body[45 * (step + 1):]):
            return _JOINED, fns, sns, nodes, step
    return (r if sn == 0 else None), fns, sns, nodes, -1


_JOINED = b"joined"


def _root_from(leaf: bytes, index: int, size: int, hashes: Sequence[bytes]) -> bytes | None:
    """RFC 9162 §2.1.3.2 root from an inclusion proof; ``None`` if the proof has the wrong length."""
    if not 0 <= index < size:
        return None
    fn, sn = index, size - 1
    r = leaf
    sha = _sha256
    for p in hashes:
        if sn == 0:
            return None
        if fn & 1 or fn == sn:
            r = sha(b"\x01" + p + r).digest()
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = sha(b"\x01" + r + p).digest()
        fn >>= 1
        sn >>= 1
    return r if sn == 0 else None


def verify(
    source: str | Path | IO[bytes] | Iterable[bytes],
    verifier_key: str,
    *,
    pinned_checkpoint: str | None = None,
    consistency_hashes: Sequence[bytes] | None = None,
    progress: Progress | None = None,
    max_problems: int = 100,
    shortcut: bool = True,
) -> VerifyReport:
    """Check a bundle offline against the trusted ``verifier_key``.

    ``pinned_checkpoint``: a signed checkpoint note the auditor trusts (older or newer
    than the bundle's); the bundle must be consistent with it, using the bundle's own
    consistency proof from the pinned size, or ``consistency_hashes`` (RFC 9162
    consistency proof between the two sizes, older first), which a newer pinned
    checkpoint always needs.
    """
    report = VerifyReport()

    def problem(part: str, detail: str, **where: Any) -> None:
        if len(report.problems) >= max_problems:
            report.truncated_problems = True
            raise _Stop
        report.problems.append(Problem(part, detail, **where))

    with contextlib.ExitStack() as stack:
        if isinstance(source, str | Path):
            try:
                lines: Iterable[bytes] = stack.enter_context(Path(source).open("rb"))
            except OSError as exc:
                report.problems.append(Problem("file", f"cannot read {source}: {exc.strerror}"))
                return report
        else:
            lines = source
        # The loop allocates only acyclic objects (parsed lines, bytes): the cyclic garbage
        # collector has nothing to find, but would rescan the caller's whole heap many times.
        collecting = gc.isenabled()
        gc.disable()
        try:
            with contextlib.suppress(_Stop):
                _verify_lines(iter(lines), verifier_key, pinned_checkpoint, consistency_hashes, progress, report,
                              problem, shortcut)
        finally:
            if collecting:
                gc.enable()
    report.ok = not report.problems
    return report


def _verify_lines(
    lines: Iterator[bytes], verifier_key: str, pinned: str | None, pinned_hashes: Sequence[bytes] | None,
    progress: Progress | None, report: VerifyReport, problem: Callable[..., None], shortcut: bool,
) -> None:
    try:
        trusted = Verifier.from_key(verifier_key.strip())
    except (ValueError, AuditfedError) as exc:
        problem("key", f"the verifier key you gave is not valid: {getattr(exc, 'detail', exc)}")
        return
    first = next(lines, None)
    if first is None:
        problem("file", "the bundle is empty")
        return
    try:
        header = orjson.loads(first)
        if not isinstance(header, dict) or header.get("type") != "header":
            raise ValueError("the first line is not the header")
        if header.get("format") != FORMAT:
            raise ValueError(f"format {header.get('format')!r} is not {FORMAT}")
        if set(header) != _HEADER_FIELDS:
            raise ValueError(f"the header's fields are not {', '.join(sorted(_HEADER_FIELDS))}")
        if not isinstance(header["query"], str) or not isinstance(header["exported_at"], str):
            raise ValueError("query and exported_at must be strings")
        if header["entry_proof_format"] != TLOG_PROOF_HEADER:
            raise ValueError(f"entry_proof_format is not {TLOG_PROOF_HEADER}")
    except ValueError as exc:
        problem("header", str(exc), line=1)
        return
    report.query, report.exported_at = header.get("query"), header.get("exported_at")
    if header.get("verifier_key") != verifier_key.strip():
        problem("key", f"the bundle names the key {str(header.get('verifier_key'))[:120]!r}, "
                       "not the key you trust", line=1)

    note = header.get("checkpoint")
    checkpoint: Checkpoint | None = None
    if not isinstance(note, str):
        problem("checkpoint", "the header has no checkpoint note", line=1)
        return
    try:
        checkpoint = verify_checkpoint(note, trusted)
    except AuditfedError as exc:
        problem("checkpoint", f"signature check failed: {exc.detail}", line=1)
        with contextlib.suppress(AuditfedError, ValueError):
            checkpoint = Checkpoint.parse(split_note(note)[0])  # still check entries against it
    if checkpoint is None:
        return
    size, root = checkpoint.size, checkpoint.root
    report.tree_size, report.origin = size, checkpoint.origin
    if header["tree_size"] != size or header["root"] != _b64(root) or header["origin"] != checkpoint.origin:
        problem("header", "origin/tree_size/root do not match the checkpoint", line=1)

    _verify_consistency(header, checkpoint, trusted, pinned, pinned_hashes, report, problem)

    tail = "\n\n" + note
    tail_length = len(tail)
    count = 0
    trailer: dict[str, Any] | None = None
    loads = orjson.loads
    sha = _sha256
    canonical_last = _CANONICAL_LAST
    def diagnose(raw: bytes, number: int, line_no: int) -> None:
        """The slow path: find and name what is wrong with entry ``number`` (or count it)."""
        try:
            entry = loads(raw)
            kind = entry["type"]
        except (ValueError, TypeError, KeyError):
            problem("entry", "the line is not a JSON entry", entry=number, field="line", line=line_no)
            return
        try:
            index = entry["index"]
            data_text, leaf_text, proof = entry["data"], entry["leaf_hash"], entry["proof"]
            if entry.get("n") != number or kind != "entry" or type(index) is not int:
                raise ValueError
        except (KeyError, TypeError, ValueError):
            problem("entry", "fields are missing or wrong (type, n, index, data, leaf_hash, proof)",
                    entry=number, field="line", line=line_no)
            return
        where = {"entry": number, "index": index, "line": line_no}
        try:
            data = _a2b(data_text, strict_mode=True)
            # canonical: the bits after the last byte are zero (else two texts decode alike)
            tail_bytes = len(data) % 3
            if tail_bytes == 1 and data_text[-3] not in _CANONICAL_LAST_OF_1:
                raise ValueError
            if tail_bytes == 2 and data_text[-2] not in canonical_last:
                raise ValueError
        except (binascii.Error, ValueError, TypeError, IndexError):
            problem("entry", "is not canonical base64", field="data", **where)
            return
        try:
            stated_leaf = _a2b(leaf_text, strict_mode=True)
            if len(leaf_text) != 44 or leaf_text[42] not in canonical_last or len(stated_leaf) != HASH_SIZE:
                raise ValueError
        except (binascii.Error, ValueError, TypeError):
            problem("entry", "is not a canonical base64 SHA-256 hash", field="leaf_hash", **where)
            return
        # the tlog-proof: header, index, hashes, then exactly the bundle's checkpoint
        prefix = f"{TLOG_PROOF_HEADER}\nindex {index}\n"
        if not isinstance(proof, str) or not proof.startswith(prefix):
            problem("entry", f"is not a {TLOG_PROOF_HEADER} proof for index {index}", field="proof", **where)
            return
        if not proof.endswith(tail):
            problem("entry", "its checkpoint is not the bundle's signed checkpoint", field="proof", **where)
            return
        hashes = _proof_hashes(proof[len(prefix):len(proof) - tail_length + 1])
        if hashes is None:
            problem("entry", "a proof hash line is not canonical base64 of 32 bytes", field="proof", **where)
            return
        leaf = sha(b"\x00" + data).digest()
        if leaf == stated_leaf and _root_from(leaf, index, size, hashes) == root:
            report.verified += 1
        elif leaf != stated_leaf and _root_from(leaf, index, size, hashes) == root:
            problem("entry", "does not match the event data (the data verifies)", field="leaf_hash", **where)
        elif leaf != stated_leaf and _root_from(stated_leaf, index, size, hashes) == root:
            problem("entry", "the event bytes were changed: they no longer hash to the logged leaf",
                    field="data", **where)
        else:
            problem("entry", f"the inclusion proof does not lead to the checkpoint root (tree size {size})",
                    field="proof", **where)

    # The fast path: everything right, with as little work as possible; anything else
    # (a failed check or an exception) goes to diagnose(), which names the problem.
    previous = _Previous()
    header_prefix = TLOG_PROOF_HEADER + "\nindex "
    last_of_1 = _CANONICAL_LAST_OF_1
    line_no = 1
    for raw in lines:
        line_no += 1
        if trailer is not None:
            problem("trailer", "there are lines after the trailer", line=line_no)
            break
        try:
            entry = loads(raw)
            if entry["type"] == "end":
                trailer = entry
                continue
        except (ValueError, TypeError, KeyError):
            count += 1
            diagnose(raw, count, line_no)
            continue
        count += 1
        try:
            index = entry["index"]
            data_text = entry["data"]
            data = _a2b(data_text, strict_mode=True)
            rest = len(data) % 3
            leaf = sha(b"\x00" + data).digest()
            proof = entry["proof"]
            prefix = f"{header_prefix}{index}\n"
            if (entry["n"] == count and entry["type"] == "entry" and type(index) is int
                    and (rest == 0 or (data_text[-3] in last_of_1 if rest == 1 else data_text[-2] in canonical_last))
                    and _b2a(leaf, newline=False).decode() == entry["leaf_hash"]
                    and proof.startswith(prefix) and proof.endswith(tail)):
                body = proof[len(prefix):len(proof) - tail_length + 1]
                hashes = _proof_hashes(body)
                if hashes is not None:
                    if shortcut:
                        found, fns, sns, nodes, joined = _root_shared(leaf, index, size, hashes, body, previous)
                        if found is _JOINED:  # the rest of the path is the previous entry's
                            fns += previous.fns[joined + 1:]
                            sns += previous.sns[joined + 1:]
                            nodes += previous.nodes[joined + 1:]
                            found = root
                        if found == root:
                            previous.body, previous.fns, previous.sns, previous.nodes = body, fns, sns, nodes
                    else:
                        found = _root_from(leaf, index, size, hashes)
                    if found == root:
                        report.verified += 1
                        if progress is not None and count % PROGRESS_EVERY == 0:
                            progress(count, None)
                        continue
        except (ValueError, TypeError, KeyError, AttributeError, IndexError, binascii.Error):
            pass
        diagnose(raw, count, line_no)
    report.entries = count
    if trailer is None:
        problem("trailer", "missing: the bundle is cut off")
    elif trailer.get("entries") != count:
        problem("trailer", f"says {trailer.get('entries')} entries, the bundle has {count}")
    if progress is not None:
        progress(count, count)


_PADS = ["=" * k for k in range(65)]
_NEWLINES = ["\n" * k for k in range(65)]
_ZEROS = [bytes(k) for k in range(65)]


def _proof_hashes(body: str) -> list[bytes] | None:
    """The hashes of a tlog-proof's hash lines, or ``None`` unless every line is the
    canonical base64 of 32 bytes (44 characters: 42, one with the two low bits clear, ``=``).

    ``body`` is the lines, each ending in a newline. The layout is checked with slices
    (every 45th character); then each line's ``=\n`` becomes ``A``, which makes the whole
    body one base64 text of 33-byte groups decoded in one call: each group is a hash and
    a zero byte (the zero also proves the two padding bits were clear).
    """
    count, rest = divmod(len(body), 45)
    if rest or count > 64:
        return None
    if not count:
        return []
    if body[43::45] != _PADS[count] or body[44::45] != _NEWLINES[count]:
        return None
    try:
        decoded = _a2b(body.replace("=\n", "A"), strict_mode=True)
    except binascii.Error:
        return None
    if len(decoded) != 33 * count or decoded[32::33] != _ZEROS[count]:
        return None
    return [decoded[i:i + HASH_SIZE] for i in range(0, 33 * count, 33)]


def _verify_consistency(
    header: dict[str, Any], checkpoint: Checkpoint, trusted: Verifier, pinned: str | None,
    pinned_hashes: Sequence[bytes] | None, report: VerifyReport, problem: Callable[..., None],
) -> None:
    proofs = header.get("consistency") or []
    if not isinstance(proofs, list):
        problem("consistency", "the header's consistency proofs are not a list", line=1)
        return
    by_old: dict[int, list[bytes]] = {}
    for position, item in enumerate(proofs):
        try:
            old, new = item["old_size"], item["new_size"]
            hashes = [_strict_b64(h, "consistency hash") for h in item["hashes"]]
            if new != checkpoint.size or type(old) is not int:
                raise InvalidInput("its new_size is not the checkpoint's size")
        except (KeyError, TypeError, InvalidInput) as exc:
            problem("consistency", f"proof {position + 1} is malformed: {getattr(exc, 'detail', 'missing fields')}",
                    line=1)
            continue
        by_old[old] = hashes
    if pinned is None:
        return
    try:
        pinned_cp = verify_checkpoint(pinned, trusted)
    except AuditfedError as exc:
        problem("pinned", f"the pinned checkpoint does not verify with the trusted key: {exc.detail}")
        return
    old_cp, new_cp = sorted((pinned_cp, checkpoint), key=lambda cp: cp.size)
    hashes = list(pinned_hashes) if pinned_hashes is not None else by_old.get(pinned_cp.size)
    if hashes is None and old_cp.size != new_cp.size:
        problem("consistency", f"no consistency proof between the pinned size {pinned_cp.size} and the bundle's "
                               f"{checkpoint.size}: supply one")
        return
    try:
        verify_consistency(old_cp.size, new_cp.size, old_cp.root, new_cp.root, hashes or [])
    except AuditfedError as exc:
        problem("consistency", f"the bundle's checkpoint (size {checkpoint.size}) is not consistent with the "
                               f"pinned one (size {pinned_cp.size}): {exc.detail}")
        return
    report.consistency.append({"pinned_size": pinned_cp.size, "bundle_size": checkpoint.size, "verified": True})
