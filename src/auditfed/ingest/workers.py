"""Ingest workers: request bodies prepared in parallel processes.

Preparing an event (JSON parsing, schema validation, identity, redaction, RFC 8785
bytes, SHA-256) costs several times more CPU than appending it, and in one Python
process it would share one interpreter lock with the sequencer, detection and the
HTTP server. :class:`ProcessPreparer` therefore runs
:func:`~auditfed.ingest.pipeline.prepare_request` in ``ingest_workers`` processes; the
server process only reads bodies, sequences and answers.

Workers are forked from a ``forkserver`` that has imported the pipeline once (so a
worker starts in milliseconds and never inherits the server's threads or open
database connections). Each builds its own enrichers from the settings: the same
principal directory, trusted issuers and redaction rules as the server. The issuers'
keys are not the worker's own: every process of the server shares one JWKS cache
(one key set, one fetch at a time and one unknown-``kid`` refetch limit per issuer)
in a private directory the server made for its run (:mod:`auditfed.identity.jwks`).
A worker that dies (killed, out of memory) breaks the pool; the preparer
then starts a new pool and retries the request once: preparing is a pure function
of the request, so a retry can neither lose nor duplicate anything.

``ingest_workers = 0`` prepares in the server process (:class:`InlinePreparer`), the
same function without the processes, in one thread beside the event loop (so a key
fetch of an actor token never stalls the loop): for tiny deployments and one-core
machines.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import multiprocessing
import os
import select
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from auditfed.identity.actors import ActorResolver
from auditfed.identity.directory import Directory
from auditfed.identity.jwks import JWKSCache
from auditfed.identity.oidc import TokenVerifier
from auditfed.ingest.pipeline import IngestRequest, prepare_request
from auditfed.ingest.prepare import Enricher, PreparedBatch
from auditfed.sources.redaction import Redactor

if TYPE_CHECKING:
    from auditfed.config import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")


def identity_of(
    settings: Settings, jwks_dir: Path | None = None
) -> tuple[Directory | None, TokenVerifier | None]:
    """The principal directory and the verifier of trusted issuers' tokens, if any.
    ``jwks_dir``: the server's shared JWKS cache (see :class:`JWKSCache`)."""
    directory = Directory.from_config(settings.directory) if settings.directory else None
    if not settings.issuers:
        return directory, None
    jwks = JWKSCache(timeout=settings.jwks_timeout, unknown_kid_cooldown=settings.jwks_refetch_cooldown,
                     shared_dir=jwks_dir)
    return directory, TokenVerifier(settings.issuers, directory=directory, jwks=jwks)


def ingest_enrichers(
    verifier: TokenVerifier | None, directory: Directory | None, redactor: Redactor
) -> tuple[Enricher, ...]:
    """The stages every event passes between validation and canonical bytes."""
    return ActorResolver(verifier, directory), redactor.apply


def worker_count(settings: Settings) -> int:
    """``ingest_workers``, or by default one per core when there are several."""
    if settings.ingest_workers is not None:
        return settings.ingest_workers
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return cores if cores and cores > 1 else 0


class Preparer(Protocol):
    async def prepare(self, request: IngestRequest) -> PreparedBatch: ...

    async def call(self, function: Callable[..., T], *args: Any) -> T:
        """``function(*args)`` off the event loop: in a worker process when there are
        workers (so both must pickle: a module-level function), else in a thread."""
        ...

    def close(self) -> None: ...


class InlinePreparer:
    """Prepares in the server process, in one thread (no worker processes): off the
    event loop, one request at a time as a worker process would."""

    def __init__(self, enrichers: tuple[Enricher, ...]) -> None:
        self.enrichers = enrichers
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="auditfed-prepare")

    async def prepare(self, request: IngestRequest) -> PreparedBatch:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, prepare_request, request, self.enrichers)

    async def call(self, function: Callable[..., T], *args: Any) -> T:
        return await asyncio.to_thread(function, *args)

    def close(self) -> None:
        self._thread.shutdown(wait=True)


def tune_garbage_collector() -> None:
    """Ingest allocates many short-lived containers (parsed JSON); the default gen-0
    threshold (700) makes the collector run every few events and rescan the
    long-lived heap. Freeze what start-up allocated and collect far less often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)


# --- inside a worker process ---

_enrichers: tuple[Enricher, ...] = ()


def _start_worker(settings: Settings, salt: bytes, server_pid: int, jwks_dir: Path | None) -> None:
    global _enrichers
    from auditfed.observability import configure_logging

    _exit_with(server_pid)
    # Ctrl-C reaches the terminal's whole process group: the server drains and shuts the
    # pool down itself, while a worker interrupted in its queue read prints a traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    configure_logging(settings.log_level, settings.log_format)
    directory, verifier = identity_of(settings, jwks_dir)
    _enrichers = ingest_enrichers(verifier, directory, Redactor(settings.redaction, salt))
    tune_garbage_collector()


def _exit_with(server_pid: int) -> None:
    """Exit when the server process does, however it ends (kill -9 included).

    A pool worker would otherwise live on: it holds both ends of the pool's queues,
    so the server's death never reaches it as an end of file.
    """
    try:
        server = os.pidfd_open(server_pid)
    except (AttributeError, OSError):  # no pidfd (not Linux): poll the pid instead
        server = None

    def watch() -> None:
        if server is not None:
            select.select([server], [], [])
        else:
            while _alive(server_pid):
                time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, name="auditfed-worker-watch", daemon=True).start()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        pass
    return True


def _prepare_in_worker(request: IngestRequest) -> PreparedBatch:
    return prepare_request(request, _enrichers)


def _ready() -> bool:
    return True


# --- in the server process ---


class ProcessPreparer:
    """Prepares in a pool of ``workers`` processes."""

    def __init__(self, settings: Settings, salt: bytes, workers: int, jwks_dir: Path | None = None) -> None:
        self._settings = settings
        self._salt = salt
        self._workers = workers
        self._jwks_dir = jwks_dir
        self._lock = threading.Lock()
        self._pool = self._new_pool()

    def _new_pool(self) -> ProcessPoolExecutor:
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["auditfed.ingest.workers"])
        pool = ProcessPoolExecutor(
            self._workers, mp_context=context,
            initializer=_start_worker, initargs=(self._settings, self._salt, os.getpid(), self._jwks_dir),
        )
        # Start every worker now, not on the first request.
        for _ in range(self._workers):
            pool.submit(_ready)
        return pool

    async def prepare(self, request: IngestRequest) -> PreparedBatch:
        return await self.call(_prepare_in_worker, request)

    async def call(self, function: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        pool = self._pool
        try:
            return await loop.run_in_executor(pool, function, *args)
        except BrokenProcessPool:
            log.error("an ingest worker died; starting new workers and retrying the request")
            self._replace(pool)
            return await loop.run_in_executor(self._pool, function, *args)

    def _replace(self, broken: ProcessPoolExecutor) -> None:
        with self._lock:
            if self._pool is broken:  # not replaced already by a concurrent request
                self._pool = self._new_pool()
        broken.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def open_preparer(
    settings: Settings, salt: bytes, enrichers: tuple[Enricher, ...], jwks_dir: Path | None = None
) -> Preparer:
    """The node's preparer: worker processes, or inline when ``ingest_workers`` is 0."""
    workers = worker_count(settings)
    if workers == 0:
        return InlinePreparer(enrichers)
    return ProcessPreparer(settings, salt, workers, jwks_dir)
