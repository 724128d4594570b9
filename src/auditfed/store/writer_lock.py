"""The data dir's writer lock: one process at a time appends to an embedded (SQLite) log.

The sequencer keeps the Merkle tree's frontier in memory, so a second process that
appended to the same SQLite file behind its back would fork the log. A running server
therefore holds an exclusive ``flock(2)`` on ``<data dir>/writer.lock`` for its whole
life; a CLI command that must append (the record of an administrative act made on the
data dir) first tries the same lock without waiting:

* free: no server runs; the command appends itself, holding the lock meanwhile (a
  server starting then waits for it);
* held: a server runs; the command hands its record to that server instead
  (:meth:`~auditfed.store.base.Store.hand_over`).

The kernel releases a ``flock`` when its holder dies (``kill -9`` included), so a
crashed server never leaves a stale lock behind. The file's content (pid, address) only
serves error messages. PostgreSQL needs none of this: its nodes elect a leader.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from pathlib import Path

from auditfed.errors import ConfigError

LOCK_FILE = "writer.lock"


class WriterLock:
    """An exclusive, process-wide lock on a data dir's log."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / LOCK_FILE
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def try_acquire(self, holder: str) -> bool:
        """Take the lock if it is free; ``holder`` says who took it (for messages)."""
        if self._fd is not None:
            return True
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()}: {holder}\n".encode())
        self._fd = fd
        return True

    def acquire(self, holder: str, timeout: float) -> None:
        """Take the lock, waiting up to ``timeout`` seconds for a CLI command to finish;
        :class:`ConfigError` naming the holder if it stays taken (another server)."""
        deadline = time.monotonic() + timeout
        while not self.try_acquire(holder):
            if time.monotonic() > deadline:
                raise ConfigError(
                    f"another auditfed process writes this data dir's log ({self.holder()}): "
                    f"stop it first, or give this server its own --data"
                )
            time.sleep(0.05)

    def holder(self) -> str:
        with contextlib.suppress(OSError):
            return self.path.read_text().strip() or "unknown"
        return "unknown"

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
