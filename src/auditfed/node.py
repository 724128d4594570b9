"""A running auditfed node: the data dir, its store, signing key, tokens and sequencer.

This is the composition root shared by the HTTP API and the CLI. ``initialise``
prepares a data dir once: the Ed25519 log key (mode 0600), the store, and the first
admin token, which is returned so it can be printed exactly once.
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
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from auditfed.config import Settings
from auditfed.detect.service import DetectionService
from auditfed.errors import ConfigError, InvalidInput
from auditfed.event.model import format_time
from auditfed.federation.service import Federation
from auditfed.federation.witness import create_witness_key
from auditfed.identity.tokens import Caller, TokenAuthority
from auditfed.identity.workload import WorkloadAuthenticator
from auditfed.ingest.prepare import prepare_event
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
from auditfed.store.retention import RetentionResult, apply_retention, parse_age

log = logging.getLogger(__name__)

KEY_FILE = "log.key"
SALT_FILE = "redaction.salt"
STORE_FILE = "store.url"


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


_SELF = Caller("auditfed", "admin")


def _retention_of(settings: Settings) -> timedelta | None:
    if settings.retention is None:
        return None
    try:
        return parse_age(settings.retention)
    except InvalidInput as exc:
        raise ConfigError(f"retention: {exc.detail}") from None


class Node:
    """Store + key + tokens + sequencer + metrics, opened from settings."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.signer = load_signer(settings)
        self.store: Store = open_store(settings.store_url, fsync=settings.fsync)
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
        #: Entries observed longer ago than this are removed (``retention``), or kept.
        self.retention = _retention_of(settings)
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
        event = {
            "action": action,
            "outcome": "success",
            "actor": {"id": f"token:{caller.token_id}", "type": caller.role},
            "resource": {"type": "endpoint", "id": resource},
            "source": {"service": "auditfed", "kind": "auditfed"},
            "attributes": details,
        }
        if self.settings.node_name:
            event["source"]["node"] = self.settings.node_name
        observed = format_time(datetime.now(UTC))
        prepared = prepare_event(event, 0, _SELF, observed, own=True)
        return self.sequencer.submit([prepared])

    def apply_retention(self, older_than: timedelta) -> RetentionResult:
        """Remove entries observed longer than ``older_than`` ago; record that it did."""
        result = apply_retention(self.store, older_than=older_than)
        if result.removed:
            log.info("retention removed entries", extra=result.as_dict())
            self.record_access(_SELF, "auditfed.retention.apply", "log",
                               {"older_than_seconds": older_than.total_seconds(),
                                **result.as_dict()})
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

    def _leader_detection(self) -> DetectionService:
        if self.detection is None or self.detection.started:  # a new term of leadership
            self.detection = DetectionService.from_settings(
                self.settings, self.store, self.sequencer, origin=self.origin)
        return self.detection

    def close(self) -> None:
        self.preparer.close()
        if self.jwks_dir is not None:
            shutil.rmtree(self.jwks_dir, ignore_errors=True)
        self.federation.stop()
        if self.detection is not None:
            self.detection.stop(self.settings.shutdown_grace)
        self.sequencer.stop()
        self.store.close()
