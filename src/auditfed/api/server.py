"""Running the API with uvicorn, and stopping it gracefully.

On SIGTERM or SIGINT the server stops taking new work (503 with Retry-After), lets
the requests in flight finish (at most ``shutdown_grace`` seconds), then the
lifespan shutdown lets the sequencer commit what is queued and sign a final
checkpoint. A second signal stops at once.
"""

from __future__ import annotations

import logging
import threading
import time
from types import FrameType

import uvicorn

from auditfed.api.app import create_app
from auditfed.config import Settings
from auditfed.ingest.workers import tune_garbage_collector
from auditfed.node import Node

log = logging.getLogger(__name__)


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, grace: float) -> None:
        super().__init__(config)
        self.grace = grace

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        state = self.config.app.state  # type: ignore[attr-defined]
        if state.draining:
            self.force_exit = True
            self.should_exit = True
            return
        state.draining = True
        log.info("draining", extra={"signal": sig, "in_flight": state.in_flight})
        threading.Thread(target=self._exit_when_idle, args=(state,), daemon=True).start()

    def _exit_when_idle(self, state: object) -> None:
        deadline = time.monotonic() + self.grace
        while state.in_flight > 0 and time.monotonic() < deadline:  # type: ignore[attr-defined]
            time.sleep(0.02)
        self.should_exit = True


def serve(settings: Settings) -> None:
    node = Node(settings)
    tune_garbage_collector()
    app = create_app(node)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http="httptools",
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=int(settings.shutdown_grace) or None,
        limit_concurrency=1000,
    )
    DrainingServer(config, settings.shutdown_grace).run()
