"""``auditfed collect``: follow log files like an agent and ship their records.

The files are followed by :class:`auditfed.sources.Collector` (rotation by rename and
truncation handled, files known by inode and fingerprint, offsets persisted atomically
in ``--state``). Each poll's new records of a file are sent as one batch to the
format's endpoint (``/v1/ingest/<format>``, ``/v1/logs`` for OTLP JSON lines,
``/v1/events`` for auditfed NDJSON). The file's offset is committed only after the
server acknowledged the batch, so a crash or restart neither loses nor repeats lines.
A crash between the answer and the commit re-sends one batch: the source formats
derive every record's id from the record, and auditfed NDJSON events without an id
get one derived from the batch's persisted name (:meth:`Collector.batch_id`), their
place in it and their bytes, so the server recognises them as duplicates.

What counts as acknowledged: a 200 (records the server rejected one by one are
reported on stderr and not retried: sending them again cannot help), and a 400/422
for the whole batch (likewise, reported). 429 and 5xx answers and connection failures
are retried with exponential backoff (the server's ``Retry-After`` is honoured)
without ever committing, until the server takes the batch. 401/403/404/415 stop the
collector with an error (nothing committed: fix the token or format and restart). A
413 splits the batch in halves.

pgaudit files are server logs: the collector asks the server to skip non-audit lines
(``X-Pgaudit-Skip-Non-Audit``), passes ``--log-line-prefix`` / ``--prefix-regex`` as
query parameters (a prefix often ends in a space, which a header cannot hold), and
joins PostgreSQL's tab-continued lines to their entry.
"""

from __future__ import annotations

import gzip
import hashlib
import signal
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import orjson
import typer
from rich.console import Console

from auditfed.defaults import DEFAULT_URL
from auditfed.errors import InvalidInput

if TYPE_CHECKING:
    from auditfed.cli.client import Client
    from auditfed.sources import Collector

err = Console(stderr=True, highlight=False, soft_wrap=True)

NDJSON = "application/x-ndjson"
#: --format -> (endpoint, content type) of a batch of lines
ENDPOINTS: dict[str, tuple[str, str]] = {
    "k8s-audit": ("/v1/ingest/k8s-audit", NDJSON),
    "cloudtrail": ("/v1/ingest/cloudtrail", NDJSON),
    "pgaudit": ("/v1/ingest/pgaudit", "text/plain"),
    "cloudevents": ("/v1/ingest/cloudevents", NDJSON),
    "github-audit": ("/v1/ingest/github-audit", NDJSON),
    "okta": ("/v1/ingest/okta", NDJSON),
    "otlp": ("/v1/logs", "application/json"),
    "ndjson": ("/v1/events", NDJSON),
}
ALIASES = {"k8s": "k8s-audit", "kubernetes": "k8s-audit", "github": "github-audit",
           "json": "ndjson", "events": "ndjson", "otel": "otlp"}
GZIP_ABOVE = 64 * 1024
PERMANENT = (400, 422)
FATAL = (401, 403, 404, 415)


class Shipper:
    """Sends a file's batch of records and tells whether the server acknowledged it."""

    def __init__(self, client: Client, fmt: str, headers: dict[str, str],
                 stop: threading.Event, max_backoff: float = 30.0,
                 params: dict[str, str] | None = None) -> None:
        self.client = client
        self.params = params or {}
        self.fmt = fmt
        self.path, self.content_type = ENDPOINTS[fmt]
        self.headers = headers
        self.stop = stop
        self.max_backoff = max_backoff
        self.summary: dict[str, Any] = {"batches": 0, "records": 0, "accepted": 0,
                                        "duplicates": 0, "rejected": 0, "skipped": 0}

    def ship(self, name: str, records: list[bytes]) -> bool:
        """Send until acknowledged; False only when asked to stop meanwhile."""
        from auditfed.cli.client import ApiError

        body = self._body(records)
        delay = 0.5
        while True:
            try:
                answer = self._post(body)
            except ApiError as exc:
                if exc.status in FATAL:
                    raise
                if exc.status == 413 and len(records) > 1:
                    half = len(records) // 2
                    return self.ship(name, records[:half]) and self.ship(name, records[half:])
                if exc.status in PERMANENT or exc.status == 413:
                    self._note(name, {"rejected": len(records), "results": exc.body.get("results") or [],
                                      "detail": exc.detail})
                    return True
                err.print(f"[yellow]retrying[/] {name}: {exc.detail} (again in {delay:.1f}s)")
                if self.stop.wait(delay):
                    return False
                delay = min(delay * 2, self.max_backoff)
                continue
            self._note(name, answer)
            self.summary["records"] += len(records)
            return True

    def _body(self, records: list[bytes]) -> bytes:
        if self.fmt == "otlp":
            # OTLP JSON lines (the collector's file exporter): one request of all lines
            merged: list[Any] = []
            for line in records:
                try:
                    merged.extend(orjson.loads(line).get("resourceLogs") or [])
                except (orjson.JSONDecodeError, AttributeError):
                    err.print("[red]skipped[/] a line that is not an OTLP JSON request")
            return orjson.dumps({"resourceLogs": merged})
        return b"\n".join(records) + b"\n"

    def _post(self, body: bytes) -> dict[str, Any]:
        headers = {"Content-Type": self.content_type, **self.headers}
        if len(body) > GZIP_ABOVE:
            body = gzip.compress(body, compresslevel=1)
            headers["Content-Encoding"] = "gzip"
        response = self.client.request("POST", self.path, content=body, headers=headers,
                                       params=self.params)
        return response.json() if response.content else {}

    def _note(self, name: str, answer: dict[str, Any]) -> None:
        self.summary["batches"] += 1
        if self.fmt == "otlp":
            partial = answer.get("partialSuccess") or {}
            rejected = int(partial.get("rejectedLogRecords") or 0)
            self.summary["rejected"] += rejected
            if rejected:
                err.print(f"  [red]rejected[/] {name}: {partial.get('errorMessage')}")
            return
        for key in ("accepted", "duplicates", "rejected", "skipped"):
            self.summary[key] += int(answer.get(key) or 0)
        if answer.get("detail") and not answer.get("results"):
            err.print(f"  [red]rejected[/] {name}: {answer['detail']}")
        shown = 0
        for result in answer.get("results") or []:
            if result.get("status") == "rejected" and shown < 20:
                shown += 1
                where = result.get("record", "?")
                err.print(f"  [red]rejected[/] {name} record {where} of a batch: {result.get('error')}")


def register(app: typer.Typer) -> None:
    """Add ``collect`` to the CLI."""

    @app.command()
    def collect(
        files: Annotated[list[Path], typer.Argument(help="log files to follow")],
        fmt: Annotated[str, typer.Option(
            "--format", help="k8s-audit|cloudtrail|pgaudit|cloudevents|github-audit|okta|otlp|ndjson"
        )],
        url: Annotated[str, typer.Option("--url", envvar="AUDITFED_URL")] = DEFAULT_URL,
        token: Annotated[str | None, typer.Option("--token", envvar="AUDITFED_TOKEN")] = None,
        state: Annotated[Path | None, typer.Option(
            "--state", help="offsets file [.auditfed-collect.json beside the first file]")] = None,
        batch_size: Annotated[int, typer.Option(min=1, max=10_000)] = 1000,
        interval: Annotated[float, typer.Option(help="seconds between polls when idle")] = 1.0,
        start_at: Annotated[str, typer.Option(help="beginning|end: where to start in a new file")] = "beginning",
        once: Annotated[bool, typer.Option("--once", help="ship what is there, then exit")] = False,
        log_line_prefix: Annotated[str | None, typer.Option(help="pgaudit: the server's log_line_prefix")] = None,
        prefix_regex: Annotated[str | None, typer.Option(help="pgaudit: the prefix as a regex (RE2 syntax)")] = None,
        cluster: Annotated[str | None, typer.Option(help="k8s-audit: the cluster's name")] = None,
        as_json: Annotated[bool, typer.Option("--json", help="print the summary as JSON")] = False,
    ) -> None:
        """Follow log files (rotation, truncation) and ship new records; resumable."""
        from auditfed.cli.client import Client
        from auditfed.sources import Collector

        name = ALIASES.get(fmt, fmt)
        if name not in ENDPOINTS:
            raise InvalidInput(f"unknown --format {fmt!r}; known: {', '.join(ENDPOINTS)}")
        if start_at not in ("beginning", "end"):
            raise InvalidInput("--start-at must be beginning or end")
        headers: dict[str, str] = {}
        params: dict[str, str] = {}  # as query parameters: a prefix may end in a space
        if name == "pgaudit":
            headers["X-Pgaudit-Skip-Non-Audit"] = "true"
            if log_line_prefix:
                params["log_line_prefix"] = log_line_prefix
            if prefix_regex:
                params["prefix_regex"] = prefix_regex
        if cluster and name == "k8s-audit":
            params["cluster"] = cluster
        state_file = state or files[0].absolute().parent / ".auditfed-collect.json"
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        client = Client(url, token)
        shipper = Shipper(client, name, headers, stop, params=params)
        collector = Collector(
            files, state_file, max_lines=batch_size,
            start_at=start_at,  # type: ignore[arg-type]
            continuation=b"\t" if name == "pgaudit" else None,
            linger=0.0 if once else min(interval, 1.0),  # --once: the files are complete
        )
        try:
            run(collector, shipper, stop, interval=interval, once=once)
        finally:
            collector.close()
            client.close()
        summary = shipper.summary
        if as_json:
            typer.echo(orjson.dumps(summary).decode())
        else:
            err.print(f"shipped {summary['records']} records in {summary['batches']} batches: "
                      f"accepted {summary['accepted']}, duplicates {summary['duplicates']}, "
                      f"rejected {summary['rejected']}, skipped {summary['skipped']}")


def with_ids(records: list[bytes], batch_id: str) -> list[bytes]:
    """Give each event without an ``id`` one derived from the batch's name, its place
    in the batch and its bytes: the same line sent again after a crash gets the same
    id (and is answered ``duplicate``); a different line never does."""
    out = []
    for place, line in enumerate(records):
        try:
            event = orjson.loads(line)
        except orjson.JSONDecodeError:
            out.append(line)  # the server rejects it, naming the line
            continue
        if isinstance(event, dict) and "id" not in event:
            seed = f"{batch_id}:{place}:".encode() + line
            event["id"] = hashlib.sha256(seed).hexdigest()[:32]
            line = orjson.dumps(event)
        out.append(line)
    return out


def run(collector: Collector, shipper: Shipper, stop: threading.Event, *,
        interval: float, once: bool) -> None:
    """Poll, ship, commit; until stopped (or, with ``once``, until caught up)."""
    idle_polls = 0
    while not stop.is_set():
        batches = collector.poll()
        shipped_any = False
        for path, records in batches:
            if shipper.fmt == "ndjson":
                records = with_ids(records, collector.batch_id(path))
            if not shipper.ship(path, records):
                return  # stopping: the batch stays uncommitted and is sent next time
            collector.commit([path])
            shipped_any = True
        if not shipped_any:
            collector.commit()  # positions moved without records (rotation, truncation)
            idle_polls += 1
            # a held-back last multi-line record is released once the file is quiet
            if once and idle_polls > 1 and not batches:
                return
            stop.wait(interval if not once else min(interval, 0.2))
        else:
            idle_polls = 0
