"""A running auditfed node: the data dir, its store, signing key, tokens and sequencer.

This is the composition root shared by the HTTP API and the CLI. ``initialise``
prepares a data dir once: the Ed25519 log key (mode 0600), the store, and the first
admin token, which is returned to be printed and also kept in ``admin.token`` (mode
0600, beside the log key, which is worth more) so a newcomer can find it again.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
import tempfile
import threading
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from auditfed.config import Settings
from auditfed.detect.service import DetectionService
from auditfed.errors import ConfigError, Forbidden, InvalidInput
from auditfed.federation.service import Federation
from auditfed.federation.witness import create_witness_key
from auditfed.identity.tokens import Caller, TokenAuthority
from auditfed.identity.workload import WorkloadAuthenticator
from auditfed.ingest.meta import SELF, HandOverDrain, meta_event, prepare_meta, token_actor
from auditfed.ingest.sequencer import Sequencer
from auditfed.ingest.workers import (
    InlinePreparer,
    Preparer,
    identity_of,
    ingest_enrichers,
    open_preparer,
)
from auditfed.ledger import Signer
from auditfed.observability import Metrics
from auditfed.sources.redaction import Redactor
from auditfed.store import Store, open_store
from auditfed.store.retention import RetentionResult, age_text, apply_retention, parse_age, parse_floor
from auditfed.store.writer_lock import WriterLock

log = logging.getLogger(__name__)

KEY_FILE = "log.key"
SALT_FILE = "redaction.salt"
STORE_FILE = "store.url"
ADMIN_TOKEN_FILE = "admin.token"


@dataclass(frozen=True)
class Initialised:
    admin_token: str
    verifier_key: str
    origin: str


def key_path(settings: Settings) -> Path:
    return settings.data_dir / KEY_FILE


def initialise(settings: Settings) -> Initialised | None:
    """Create the data dir's key, store and admin token; ``None`` if already done."""
    path = key_path(settings)
    if path.exists():
        return None
    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    if settings.store:
        _shared_store_is_new(settings)
    origin = settings.origin or f"auditfed.local/log-{secrets.token_hex(4)}"
    signer = Signer.generate(origin)
    _private_file(path, (signer.private_key_string() + "\n").encode())
    create_witness_key(settings.data_dir, origin)  # the hub's witness key, beside the log key
    store = open_store(settings.store_url, fsync=settings.fsync)
    try:
        token, _ = TokenAuthority(store).create("admin", description="created at init")
        _replace_private_file(settings.data_dir / ADMIN_TOKEN_FILE, (token + "\n").encode())
        if hasattr(store, "claim_meta"):  # a shared store: this is now the log's key
            store.claim_meta("log_verifier_key", signer.verifier_key())
    finally:
        store.close()
    return Initialised(token, signer.verifier_key(), origin)


def _shared_store_is_new(settings: Settings) -> None:
    """An explicit store: remember it in the data dir (``store.url``, mode 0600), and
    refuse to create a second log key for a store that already has a log."""
    store = open_store(settings.store_url, fsync=settings.fsync)
    try:
        registered = store.get_meta("log_verifier_key")
    finally:
        store.close()
    if registered is not None:
        raise ConfigError(
            f"the store already holds a log (key {registered}): copy log.key and redaction.salt "
            f"from a data dir of that log into {settings.data_dir} instead (docs/postgresql.md)"
        )
    path = settings.data_dir / STORE_FILE
    if not path.exists():
        _private_file(path, (settings.store + "\n").encode())  # type: ignore[operator]


def _private_file(path: Path, content: bytes) -> None:
    # O_EXCL: two racing initialisations cannot both write one.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(content)


def _replace_private_file(path: Path, content: bytes) -> None:
    # A file left from an earlier, removed log names a token this store never had.
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    _private_file(path, content)


def load_salt(settings: Settings) -> bytes:
    """The log's secret redaction salt (created on first use, mode 0600)."""
    path = settings.data_dir / SALT_FILE
    if not path.exists():
        with contextlib.suppress(FileExistsError):
            _private_file(path, secrets.token_bytes(32))
    return path.read_bytes()


def load_signer(settings: Settings) -> Signer:
    path = key_path(settings)
    try:
        if path.stat().st_mode & 0o077:
            raise ConfigError(f"{path} is readable by others: chmod 600 it")
        return Signer.from_key(path.read_text().strip())
    except FileNotFoundError:
        raise ConfigError(
            f"no log key in {settings.data_dir}: run 'auditfed init --data {settings.data_dir}'"
        ) from None


#: Seconds a starting server waits for a CLI command holding the data dir's writer lock.
WRITER_LOCK_WAIT = 30.0


def retention_floor(settings: Settings) -> timedelta | None:
    """How long meta-audit records are kept whatever retention asks (``None``: no floor)."""
    try:
        return parse_floor(settings.retention_floor)
    except InvalidInput as exc:
        raise ConfigError(f"retention_floor: {exc.detail}") from None


def _retention_of(settings: Settings) -> tuple[timedelta | None, timedelta | None]:
    """The ``retention`` age and the ``retention_floor`` that protects the auditors' trail."""
    floor = retention_floor(settings)
    if settings.retention is None:
        return None, floor
    try:
        age = parse_age(settings.retention)
    except InvalidInput as exc:
        raise ConfigError(f"retention: {exc.detail}") from None
    if floor is not None and age < floor:
        raise ConfigError(
            f"retention {settings.retention} is shorter than retention_floor {settings.retention_floor}: "
            "meta-audit records (the auditors' trail) younger than the floor are never removed, so "
            "every run would be refused; set retention to at least the floor"
        )
    return age, floor


class Node:
    """Store + key + tokens + sequencer + metrics, opened from settings."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        #: Entries observed longer ago than this are removed (``retention``), or kept;
        #: meta-audit records younger than the floor never are (``retention_floor``).
        self.retention, self.retention_floor = _retention_of(settings)
        self.signer = load_signer(settings)
        self.store: Store = open_store(settings.store_url, fsync=settings.fsync)
        #: An embedded log has one writer process: this server (see WriterLock).
        self.writer_lock: WriterLock | None = None
        if self.store.url.startswith("sqlite"):
            self.writer_lock = WriterLock(settings.data_dir)
            try:
                self.writer_lock.acquire(f"auditfed serve on {settings.listen}", WRITER_LOCK_WAIT)
            except ConfigError:
                self.store.close()
                raise
        self.metrics = Metrics()
        #: The JWKS cache this server's processes share (a private directory for this run).
        self.jwks_dir = Path(tempfile.mkdtemp(prefix="auditfed-jwks-")) if settings.issuers else None
        self.directory, self.verifier = identity_of(settings, self.jwks_dir)
        workloads = (
            WorkloadAuthenticator(self.verifier, settings.workloads, self.directory)
            if self.verifier is not None and settings.workloads else None
        )
        self.tokens = TokenAuthority(self.store, settings.token_cache_seconds, workloads)
        self.redactor = Redactor(settings.redaction, load_salt(settings))
        #: Stages every event passes between validation and canonical bytes.
        self.enrichers = ingest_enrichers(self.verifier, self.directory, self.redactor)
        #: Decodes and prepares request bodies (in worker processes by default).
        self.preparer: Preparer = InlinePreparer(self.enrichers)
        if self.store.url.startswith(("postgresql://", "postgres://")):
            from auditfed.ingest.cluster import ClusterSequencer  # many nodes, one database

            self.sequencer: Any = ClusterSequencer(
                self.store, self.signer, settings=settings, salt=load_salt(settings),  # type: ignore[arg-type]
                max_commit_events=settings.max_commit_events,
                observe_commit=self.metrics.observe_commit, registry=self.metrics.registry,
            )
        else:
            self.sequencer = Sequencer(
                self.store,
                self.signer,
                max_commit_events=settings.max_commit_events,
                observe_commit=self.metrics.observe_commit,
            )
        self.metrics.track(self.metrics.log_size, lambda: self.sequencer.size)
        self.metrics.track(
            self.metrics.checkpoint_size,
            lambda: cp.size if (cp := self.sequencer.latest_checkpoint) else 0,
        )
        self.metrics.track(self.metrics.retained_from, self.store.retained_from)
        #: Appends what a CLI hands over while this server runs (SQLite; a PostgreSQL
        #: leader drains the cluster's pending table itself).
        self.hand_over = HandOverDrain(self.store, self.sequencer) if self.writer_lock else None
        #: Federation: the hub part, and the forwarder when ``upstream`` is set.
        self.federation = Federation(self)
        #: Live detection, alerts and their sinks (set up by ``start``).
        self.detection: DetectionService | None = None

    @property
    def origin(self) -> str:
        return self.signer.name

    def record_access(
        self, caller: Caller, action: str, resource: str, details: dict[str, Any]
    ) -> Future:
        """Append an event saying what a reader or admin did (audit the auditors).

        Returns the sequencer's future: callers that answer only after the record is
        durable wait on it.
        """
        return self.record(action, token_actor(caller), resource, details)

    def record(
        self, action: str, actor: dict[str, Any], resource: str, details: dict[str, Any],
        outcome: str = "success",
    ) -> Future:
        """Append a meta-audit record (:mod:`auditfed.ingest.meta`); its future says when
        it is durable."""
        event = meta_event(action, actor, resource, details, outcome=outcome,
                           node=self.settings.node_name)
        return self.sequencer.submit([prepare_meta(event)])

    def apply_retention(self, older_than: timedelta) -> RetentionResult | None:
        """Remove entries observed longer than ``older_than`` ago; record runs that
        removed something, and refusals (``None``: a young meta-audit record was in the way)."""
        floor = self.retention_floor
        details: dict[str, Any] = {"older_than_seconds": older_than.total_seconds(),
                                   "floor": age_text(floor) if floor else None}
        try:
            result = apply_retention(self.store, older_than=older_than, floor=floor)
        except Forbidden as exc:
            log.error("retention refused", extra={"detail": exc.detail})
            self.record("auditfed.retention.apply", token_actor(SELF), "log",
                        {**details, **exc.extensions, "reason": exc.detail}, outcome="denied")
            return None
        if result.removed:
            log.info("retention removed entries", extra=result.as_dict())
            self.record("auditfed.retention.apply", token_actor(SELF), "log",
                        {**details, **result.as_dict()})
        return result

    def start(self) -> None:
        inline, self.preparer = self.preparer, open_preparer(
            self.settings, load_salt(self.settings), self.enrichers, self.jwks_dir)
        inline.close()
        if self.verifier is not None:  # the issuers' keys, fetched before the first token needs them
            threading.Thread(target=self.verifier.prefetch, name="auditfed-jwks-prefetch", daemon=True).start()
        self.sequencer.start()
        self.detection = DetectionService.from_settings(
            self.settings, self.store, self.sequencer, origin=self.origin,
            registry=self.metrics.registry)
        if hasattr(self.sequencer, "run_on_leader"):  # a cluster: detect once, on the leader
            self.sequencer.run_on_leader(self._leader_detection)
        else:
            self.detection.start()
        self.federation.start()
        if self.hand_over is not None:
            self.hand_over.start()

    def _leader_detection(self) -> DetectionService:
        if self.detection is None or self.detection.started:  # a new term of leadership
            self.detection = DetectionService.from_settings(
                self.settings, self.store, self.sequencer, origin=self.origin)
        return self.detection

    def close(self) -> None:
        self.preparer.close()
        if self.jwks_dir is not None:
            shutil.rmtree(self.jwks_dir, ignore_errors=True)
        if self.hand_over is not None:
            self.hand_over.stop()
        self.federation.stop()
        if self.detection is not None:
            self.detection.stop(self.settings.shutdown_grace)
        self.sequencer.stop()
        self.store.close()
        if self.writer_lock is not None:
            self.writer_lock.release()
