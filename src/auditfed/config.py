"""Settings: one model, filled from flags, ``AUDITFED_*`` environment variables and a
TOML file (``--config``), in that order of precedence, then defaults.

Every setting can be given all three ways: ``max_body_bytes`` is the flag
``--max-body-bytes``, the variable ``AUDITFED_MAX_BODY_BYTES`` and the TOML key
``max_body_bytes``.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from auditfed.defaults import DEFAULT_PORT
from auditfed.errors import ConfigError


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AUDITFED_", extra="forbid")

    data_dir: Path = Field(Path("auditfed-data"), description="where the log, key and store live")
    listen: str = Field(f"127.0.0.1:{DEFAULT_PORT}", description="HOST:PORT to serve on")
    store: str | None = Field(None, description="store URL; default: SQLite in the data dir")
    origin: str | None = Field(None, description="log origin (checkpoint name), set at init")
    fsync: bool = Field(
        True,
        description="fsync every commit: acknowledged events survive power loss, not only "
        "a process crash. Checkpoints are always fsynced.",
    )
    max_body_bytes: int = Field(16 * 1024 * 1024, ge=1024)
    max_events_per_request: int = Field(10_000, ge=1)
    # issue #16 (body): the largest event the log stores
    max_event_bytes: int = Field(
        1024 * 1024, ge=1024,
        description="largest stored event (its canonical JSON, the leaf data); a bigger one "
        "is rejected (413) and named in the answer",
    )
    max_commit_events: int = Field(20_000, ge=1, description="group-commit batch cap")
    ingest_workers: int | None = Field(
        None, ge=0, le=64,
        description="processes that parse, validate and hash incoming events; default one "
        "per core on a multi-core machine, 0 = in the server process",
    )
    checkpoint_interval: float = Field(0.5, gt=0, le=1.0, description="seconds between checkpoints")
    token_cache_seconds: float = Field(1.0, ge=0)
    shutdown_grace: float = Field(10.0, ge=0, description="seconds for in-flight work on SIGTERM")
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["json", "text"] = "json"
    node_name: str | None = Field(None, description="this node's name in a federation")
    upstream: str | None = Field(None, description="URL of the federation hub to forward to")
    upstream_token: str | None = Field(None, description="this node's token at the hub (role node)")
    upstream_batch: int = Field(2000, ge=1, le=10_000, description="entries per forwarded batch")
    upstream_heartbeat: float = Field(5.0, gt=0, description="seconds between heartbeats when idle")
    federation_heartbeat: float = Field(
        300.0, gt=0, description="hub: seconds of silence after which a node raises an alert"
    )
    issuers: list[dict[str, Any]] = Field(
        default_factory=list, description="trusted OIDC issuers ([[issuers]] tables)"
    )
    directory: dict[str, Any] = Field(
        default_factory=dict, description="aliases -> principals ([directory] table)"
    )
    workloads: list[dict[str, Any]] = Field(
        default_factory=list, description="JWT-authenticated sources ([[workloads]] tables)"
    )
    # issue #16 item 8 (identity): key fetches of the trusted issuers, one cache per server
    jwks_timeout: float = Field(5.0, gt=0, le=60, description="seconds a JWKS or discovery request may take")
    jwks_refetch_cooldown: float = Field(
        30.0, ge=1, description="server-wide: at most one refetch per issuer per this many seconds for unknown kids"
    )
    redaction: list[dict[str, Any]] | None = Field(
        None, description="redaction rules ([[redaction]] tables); default rules when unset"
    )
    rules: list[Path] = Field(
        default_factory=list, description="extra Sigma rule folders or files"
    )
    default_rules: bool = Field(True, description="load the bundled rule pack")
    webhooks: list[dict[str, Any]] = Field(
        default_factory=list, description="alert webhooks ([[webhooks]] tables)"
    )
    # webhooks part of issue 16: where webhooks may point (None: anywhere)
    webhook_allowed_hosts: list[str] | None = Field(
        None, description="hosts webhooks may point to: names, .domains, IP networks; default any"
    )
    retention: str | None = Field(
        None,
        description="remove entries observed longer ago than this (400d, 52w, 7y), checked "
        "hourly; their leaf hashes stay, so the log still verifies. Default: keep everything",
    )
    # --- connection and read limits (issue 16: bounded resources, fair under load) ---
    max_connections: int = Field(
        4096, ge=16,
        description="open connections at most; past it the server closes the connection that "
        "has waited longest for its request head (unauthenticated), then idle keep-alive ones",
    )
    max_header_bytes: int = Field(
        65_536, ge=4096, le=16 * 1024 * 1024,
        description="bytes of a request line plus headers; more: 431 and the connection is closed",
    )
    header_timeout: float = Field(
        10.0, gt=0, description="seconds a client has to send a request's line and headers (slowloris)"
    )
    body_timeout: float = Field(
        60.0, gt=0, description="seconds a client has to send a request body once its headers are in"
    )
    keepalive_timeout: float = Field(
        5.0, gt=0, description="seconds an idle keep-alive connection stays open between requests"
    )
    max_streams: int = Field(256, ge=1, description="open alert streams (server-sent events) at most")
    max_streams_per_token: int = Field(8, ge=1, description="open alert streams per token at most")
    max_response_bytes: int = Field(
        8 * 1024 * 1024, ge=65_536,
        description="event bytes per page of a read (search, log entries, answers): a page may hold "
        "fewer than asked (at least one event); clients page on",
    )
    # issue 16 item 5 (admin): the auditors' trail outlives retention.
    retention_floor: str = Field(
        "400d",
        description="meta-audit records (source.service auditfed: auditor reads, admin acts, "
        "retention runs, alerts) younger than this are never removed: a retention cut into them "
        "is refused. 0 = no floor",
    )
    demo: bool = Field(False, description="feed demo events from made-up services")
    demo_rate: float = Field(20.0, gt=0, description="demo events per second")

    @property
    def host(self) -> str:
        return self.listen.rsplit(":", 1)[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rsplit(":", 1)[1])

    @property
    def store_url(self) -> str:
        remembered = self.data_dir / "store.url"  # written by ``init --store`` (mode 0600)
        if not self.store and remembered.exists():
            return remembered.read_text().strip()
        return self.store or f"sqlite:///{(self.data_dir / 'auditfed.db').resolve()}"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings)


def load_settings(config_file: Path | None = None, **flags: Any) -> Settings:
    """Settings from flags (those not None) over environment over the TOML file."""
    file_values: dict[str, Any] = {}
    if config_file is not None:
        try:
            file_values = tomllib.loads(config_file.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read config file {config_file}: {exc}") from None
    given = {key: value for key, value in flags.items() if value is not None}
    try:
        env_and_flags = Settings(**given)
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None
    # The environment and flags win over the file: take the file's values for every
    # field that neither set.
    explicit = env_and_flags.model_fields_set
    merged = {**file_values, **{k: getattr(env_and_flags, k) for k in explicit}}
    try:
        return Settings.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None


def _describe(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'config'}: {e['msg']}" for e in exc.errors()
    )
