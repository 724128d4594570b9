"""The file shipper's core: follow log files like an agent, at-least-once, no gaps.

Behaviour follows what log agents (Fluent Bit ``tail``, Filebeat) do:

* A file is identified by ``(st_dev, st_ino)`` plus a fingerprint (SHA-256 of its first
  bytes), not by its name.
* **Rotation by rename** (``app.log`` -> ``app.log.1``, a new ``app.log`` created): the
  old file is drained to its end (through the descriptor still open, or found again by
  inode among its siblings after a restart), then the new file is read from offset 0.
* **Truncation** (``copytruncate``): a size below the committed offset, or a changed
  fingerprint, restarts the file at offset 0.
* Only **complete lines** are returned; a partial last line waits for its newline
  (except at the end of a rotated-away file). With ``continuation`` (e.g. ``b"\\t"``,
  PostgreSQL's multi-line messages), following lines that start with it are joined to
  their record, and the last record is held back until the file has been quiet for
  ``linger`` seconds.
* Offsets are **committed only after a successful send** (:meth:`Collector.commit`) and
  persisted atomically (write, fsync, rename) in the state file, so a restart neither
  loses nor repeats lines. Until then, :meth:`Collector.poll` returns the same lines again.
* A crash between the server's answer and the commit sends one batch again. For
  records that carry no id of their own, :meth:`Collector.batch_id` names the batch
  starting at a committed position, and is persisted before its first use: the
  batch read again after the crash gets the same name, so ids derived from it repeat
  and the server answers ``duplicate`` instead of storing the records twice.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Literal

import orjson

FINGERPRINT_BYTES = 1024


@dataclass(frozen=True, slots=True)
class Position:
    """Where reading of one logical path stands: file identity and byte offset."""

    dev: int
    ino: int
    offset: int
    fingerprint: str


class Collector:
    """Follow ``paths``; :meth:`poll` yields new complete records, :meth:`commit` saves.

    ``max_lines`` / ``max_bytes`` bound one poll's batch per path. ``start_at`` says
    where to begin on a path never seen before (``"beginning"`` or ``"end"``).
    """

    def __init__(
        self,
        paths: Iterable[str | os.PathLike[str]],
        state_file: str | os.PathLike[str],
        *,
        max_lines: int = 1000,
        max_bytes: int = 1 << 20,
        start_at: Literal["beginning", "end"] = "beginning",
        continuation: bytes | None = None,
        linger: float = 1.0,
    ) -> None:
        self.paths = [str(Path(p).absolute()) for p in paths]
        self.state_file = Path(state_file)
        self.max_lines = max_lines
        self.max_bytes = max_bytes
        self.start_at = start_at
        self.continuation = continuation
        self.linger = linger
        self._committed, self._batches = self._load()
        self._pending: dict[str, Position | None] = {}
        self._open: dict[str, tuple[int, int, IO[bytes]]] = {}

    # -- state ------------------------------------------------------------------------

    def _load(self) -> tuple[dict[str, Position | None], dict[str, str]]:
        try:
            raw = orjson.loads(self.state_file.read_bytes())
        except FileNotFoundError:
            return {}, {}
        raw = raw if isinstance(raw, dict) else {}
        files = raw.get("files") or {}
        batches = raw.get("batches") or {}
        return ({p: (Position(**v) if v else None) for p, v in files.items()},
                {p: b for p, b in batches.items() if isinstance(b, str)})

    def _save(self) -> None:
        data = {"version": 1,
                "files": {p: (asdict(v) if v else None) for p, v in self._committed.items()},
                "batches": self._batches}
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_name(self.state_file.name + ".tmp")
        with tmp.open("wb") as fh:
            fh.write(orjson.dumps(data, option=orjson.OPT_INDENT_2))
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(self.state_file)
        with contextlib.suppress(OSError):
            dir_fd = os.open(self.state_file.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)

    def position(self, path: str | os.PathLike[str]) -> Position | None:
        """The committed position of ``path`` (None: start of the next file)."""
        return self._committed.get(str(Path(path).absolute()))

    # -- public API -------------------------------------------------------------------

    def poll(self) -> list[tuple[str, list[bytes]]]:
        """New complete records since the committed offsets, per path (non-empty only)."""
        out: list[tuple[str, list[bytes]]] = []
        for path in self.paths:
            records, position, changed = self._poll_one(path)
            if changed:
                self._pending[path] = position
            if records:
                out.append((path, records))
        return out

    def batch_id(self, path: str | os.PathLike[str]) -> str:
        """A random name for the batch starting at ``path``'s committed position,
        persisted before it is returned; the same until that position moves."""
        key = str(Path(path).absolute())
        if key not in self._batches:
            self._batches[key] = secrets.token_hex(16)
            self._save()
        return self._batches[key]

    def commit(self, paths: Iterable[str] | None = None) -> None:
        """Persist the positions reached by the last :meth:`poll` (after a good send).

        ``paths`` limits the commit to those paths (the others will be polled again).
        """
        chosen = list(self._pending) if paths is None else [str(Path(p).absolute()) for p in paths]
        moved = False
        for path in chosen:
            if path in self._pending:
                self._committed[path] = self._pending.pop(path)
                self._batches.pop(path, None)
                moved = True
        if moved:
            self._save()

    def close(self) -> None:
        for _dev, _ino, fh in self._open.values():
            fh.close()
        self._open.clear()

    def __enter__(self) -> Collector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals --------------------------------------------------------------------

    def _handle(self, path: str, dev: int, ino: int) -> IO[bytes] | None:
        """An open file with identity (dev, ino): the held one, the path, or a sibling."""
        held = self._open.get(path)
        if held and (held[0], held[1]) == (dev, ino):
            return held[2]
        candidates = [path]
        parent = Path(path).parent
        base = Path(path).name
        with contextlib.suppress(OSError):
            candidates += sorted(
                str(e.path) for e in os.scandir(parent) if e.name.startswith(base) and e.path != path
            )
        for candidate in candidates:
            try:
                st = Path(candidate).stat()
            except OSError:
                continue
            if (st.st_dev, st.st_ino) == (dev, ino):
                try:
                    fh = Path(candidate).open("rb")  # noqa: SIM115 - held across polls
                except OSError:
                    continue
                if held:
                    held[2].close()
                self._open[path] = (dev, ino, fh)
                return fh
        return None

    @staticmethod
    def _fingerprint(fh: IO[bytes], offset: int) -> str:
        fh.seek(0)
        return hashlib.sha256(fh.read(min(offset, FINGERPRINT_BYTES))).hexdigest()

    def _read(self, fh: IO[bytes], offset: int, *, final: bool, quiet: bool) -> tuple[list[bytes], int]:
        """Records from ``offset``; returns them and the offset after the last one."""
        fh.seek(offset)
        data = fh.read(self.max_bytes)
        if not data:
            return [], offset
        at_eof = not fh.read(1)
        end = data.rfind(b"\n") + 1
        if end == 0:
            if final and at_eof:
                end = len(data)  # a rotated file's unterminated last line
            elif len(data) >= self.max_bytes:
                end = len(data)  # a line longer than a batch: pass it on in pieces
            else:
                return [], offset
        elif final and at_eof and end < len(data):
            end = len(data)
        chunk = data[:end]
        lines = chunk.split(b"\n")
        if chunk.endswith(b"\n"):
            lines.pop()
        # map line -> end offset so that a partial batch commits exactly what it returns
        ends: list[int] = []
        pos = offset
        for line in lines:
            pos += len(line) + 1
            ends.append(min(pos, offset + end))
        records: list[bytes] = []
        record_ends: list[int] = []
        for line, line_end in zip(lines, ends, strict=True):
            clean = line.rstrip(b"\r")
            if self.continuation and records and clean.startswith(self.continuation):
                records[-1] = records[-1] + b"\n" + clean
                record_ends[-1] = line_end
            else:
                records.append(clean)
                record_ends.append(line_end)
        if self.continuation and records:
            # the last record may still grow: wait for its next line, or for quiet
            hold = (not (final or quiet) and end == len(data)) if at_eof else len(records) > 1
            if hold:
                records.pop()
                record_ends.pop()
        if len(records) > self.max_lines:
            records = records[: self.max_lines]
            record_ends = record_ends[: self.max_lines]
        return records, (record_ends[-1] if record_ends else offset)

    def _poll_one(self, path: str) -> tuple[list[bytes], Position | None, bool]:
        known = path in self._committed
        pos = self._committed.get(path)
        try:
            st: os.stat_result | None = Path(path).stat()
        except FileNotFoundError:
            st = None
        records: list[bytes] = []
        if pos is not None and (st is None or (st.st_dev, st.st_ino) != (pos.dev, pos.ino)):
            # the file we were reading was rotated away (or deleted): drain it first
            old = self._handle(path, pos.dev, pos.ino)
            if old is not None:
                size = os.fstat(old.fileno()).st_size
                got, new_offset = self._read(old, pos.offset, final=True, quiet=True)
                records += got
                if new_offset < size:  # more left in the old file: keep draining it
                    fp = self._fingerprint(old, new_offset)
                    return records, Position(pos.dev, pos.ino, new_offset, fp), True
                old.close()
                self._open.pop(path, None)
            pos = None
            known = True  # the next file is read from its beginning
        if st is None:
            if not known:
                # absent at first sight: whatever appears later is new, read it all
                self._committed[path] = None
            changed = bool(records) or self._committed.get(path) is not None
            return records, None, changed
        fh = self._handle(path, st.st_dev, st.st_ino)
        if fh is None:
            return records, pos, bool(records)
        if pos is None:
            offset = 0
            if not known and self.start_at == "end":
                # first sight of an existing file: its history is not ours to ship
                offset = st.st_size
                self._committed[path] = Position(st.st_dev, st.st_ino, offset,
                                                 self._fingerprint(fh, offset))
        else:
            offset = pos.offset
            if st.st_size < offset or self._fingerprint(fh, offset) != pos.fingerprint:
                offset = 0  # truncated (copytruncate) or a different file
        quiet = (time.time() - st.st_mtime) >= self.linger
        got, new_offset = self._read(fh, offset, final=False, quiet=quiet)
        records += got
        new_pos = Position(st.st_dev, st.st_ino, new_offset, self._fingerprint(fh, new_offset))
        return records, new_pos, new_pos != self._committed.get(path) or bool(records)
