"""Structured logs (one JSON object per line) and Prometheus metrics."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from auditfed.safeurl import redact_url

_STANDARD_ATTRS = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """``{"time", "level", "logger", "message", ...extra}`` per line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


class UrlRedactingFilter(logging.Filter):
    """Shows URL arguments of a log record without credentials.

    httpx logs every request's full URL at info level; a webhook or upstream URL may
    carry ``user:pass@`` or ``?api_key=``.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(redact_url(str(a)) if "://" in str(a) else a for a in record.args)
        return True


def configure_logging(level: str = "info", fmt: str = "json") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
        handler.formatter.converter = __import__("time").gmtime  # type: ignore[union-attr]
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    logging.getLogger("uvicorn.access").setLevel("WARNING")
    httpx_log = logging.getLogger("httpx")
    if not any(isinstance(f, UrlRedactingFilter) for f in httpx_log.filters):
        httpx_log.addFilter(UrlRedactingFilter())


class Metrics:
    """The node's Prometheus metrics, in a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.ingested = Counter("auditfed_events_ingested", "Events appended to the log", registry=r)
        self.duplicates = Counter(
            "auditfed_events_duplicate", "Events answered as duplicates", registry=r
        )
        self.rejected = Counter(
            "auditfed_events_rejected", "Events rejected", ["reason"], registry=r
        )
        self.batch_events = Histogram(
            "auditfed_commit_batch_events",
            "Events per group commit",
            buckets=(1, 10, 100, 500, 1000, 2500, 5000, 10000, 20000),
            registry=r,
        )
        self.commit_seconds = Histogram(
            "auditfed_commit_seconds",
            "Group commit latency",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
            registry=r,
        )
        self.log_size = Gauge("auditfed_log_size", "Entries in the log", registry=r)
        self.checkpoint_size = Gauge(
            "auditfed_checkpoint_size", "Size of the latest signed checkpoint", registry=r
        )
        self.retained_from = Gauge(
            "auditfed_log_retained_from",
            "Entries below this index were removed by retention", registry=r,
        )
        self.requests = Counter(
            "auditfed_http_requests", "HTTP requests", ["method", "status"], registry=r
        )

    def observe_commit(self, events: int, seconds: float) -> None:
        self.batch_events.observe(events)
        self.commit_seconds.observe(seconds)
        self.ingested.inc(events)

    def track(self, gauge: Gauge, read: Callable[[], float]) -> None:
        gauge.set_function(read)
