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
from dataclasses import dataclass
from pathlib import Path

from auditfed.config import Settings
from auditfed.errors import ConfigError
from auditfed.identity.actors import ActorResolver
from auditfed.identity.directory import Directory
from auditfed.identity.oidc import TokenVerifier
from auditfed.identity.tokens import TokenAuthority
from auditfed.ingest.prepare import Enricher
from auditfed.ingest.sequencer import Sequencer
from auditfed.ledger import Signer
from auditfed.observability import Metrics
from auditfed.sources.redaction import Redactor
from auditfed.store import Store, open_store

log = logging.getLogger(__name__)

KEY_FILE = "log.key"
SALT_FILE = "redaction.salt"


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
    origin = settings.origin or f"auditfed.local/log-{secrets.token_hex(4)}"
    signer = Signer.generate(origin)
    _private_file(path, (signer.private_key_string() + "\n").encode())
    store = open_store(settings.store_url, fsync=settings.fsync)
    try:
        token, _ = TokenAuthority(store).create("admin", description="created at init")
    finally:
        store.close()
    return Initialised(token, signer.verifier_key(), origin)


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


class Node:
    """Store + key + tokens + sequencer + metrics, opened from settings."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.signer = load_signer(settings)
        self.store: Store = open_store(settings.store_url, fsync=settings.fsync)
        self.tokens = TokenAuthority(self.store, settings.token_cache_seconds)
        self.metrics = Metrics()
        self.directory = Directory.from_config(settings.directory) if settings.directory else None
        self.verifier = (
            TokenVerifier(settings.issuers, directory=self.directory) if settings.issuers else None
        )
        self.redactor = Redactor(settings.redaction, load_salt(settings))
        #: Stages every event passes between validation and canonical bytes.
        self.enrichers: tuple[Enricher, ...] = (
            ActorResolver(self.verifier, self.directory),
            self.redactor.apply,
        )
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

    @property
    def origin(self) -> str:
        return self.signer.name

    def start(self) -> None:
        self.sequencer.start()

    def close(self) -> None:
        self.sequencer.stop()
        self.store.close()
