"""In-process logs for the answers' tests: a real SQLite store, sequencer and key."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from auditfed.event.model import format_time
from auditfed.identity.tokens import Caller
from auditfed.ingest.prepare import prepare_event
from auditfed.ingest.sequencer import Sequencer
from auditfed.ledger import Signer
from auditfed.store.sqlite import SQLiteStore

ADMIN = Caller("test", "admin")
ROOT = Path(__file__).resolve().parents[2]


class Log:
    """A store + sequencer + signer in this process."""

    def __init__(self, path: Path, origin: str = "test.example/log") -> None:
        self.signer = Signer.generate(origin)
        self.store = SQLiteStore(path / "log.db", fsync=False)
        self.sequencer = Sequencer(self.store, self.signer)
        self.sequencer.start()

    @property
    def verifier_key(self) -> str:
        return self.signer.verifier_key()

    def append(self, events: Iterable[dict[str, Any]]) -> list[int]:
        observed = format_time(datetime.now(UTC))
        prepared = [prepare_event(dict(e), i, ADMIN, observed) for i, e in enumerate(events)]
        results = self.sequencer.append_sync(prepared)
        self.sequencer.checkpoint_now()
        self.sequencer.wait_indexed(5)
        return [r.index for r in results]

    def close(self) -> None:
        self.sequencer.stop()
        self.store.close()


@contextmanager
def open_log(path: Path) -> Iterator[Log]:
    log = Log(path)
    try:
        yield log
    finally:
        log.close()


def event(action: str, actor: str = "alice", *, service: str = "svc", time: str = "2026-11-27T10:00:00Z",
          **fields: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"action": action, "actor": {"id": actor, "type": "user"}, "time": time,
                           "source": {"service": service, "kind": "app"}}
    if "principal" in fields:
        out["actor"]["principal"] = fields.pop("principal")
    out.update(fields)
    return out
