"""``auditfed send``: files of events to a server, in batches, safely retried.

Events in auditfed's format are sent in batches to ``POST /v1/events``. An event
without an ``id`` gets one here (UUIDv7) before the first attempt, so that a batch
resent after a lost answer is recognised as duplicates instead of stored twice.
Files in a source's own format go whole to that source's endpoint, which
normalises them.

Every rejection is reported, 1-based, where an editor finds it: ``line N`` of an
NDJSON file (blank lines counted), ``item N`` of a JSON array, ``record N`` of a
source's file. ``send`` exits 1 when anything was rejected (docs/cli.md).
"""

from __future__ import annotations

import gzip
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from auditfed.cli.client import Client
from auditfed.cli.ui import progress_bar
from auditfed.errors import InvalidInput
from auditfed.event.model import new_event_id
from auditfed.ingest.body import BadItem, parse_json_items

#: --format name -> (endpoint, content type) for formats the server normalises.
SOURCE_ENDPOINTS = {
    "k8s": ("/v1/ingest/k8s-audit", "application/json"),
    "cloudtrail": ("/v1/ingest/cloudtrail", "application/json"),
    "pgaudit": ("/v1/ingest/pgaudit", "text/plain"),
    "cloudevents": ("/v1/ingest/cloudevents", "application/cloudevents-batch+json"),
    "github": ("/v1/ingest/github-audit", "application/json"),
    "okta": ("/v1/ingest/okta", "application/json"),
}
GZIP_ABOVE = 64 * 1024


def _read(name: str) -> bytes:
    return sys.stdin.buffer.read() if name == "-" else Path(name).read_bytes()


def detect_format(name: str, body: bytes) -> str:
    """Guess a file's format from its name and first bytes."""
    lower = name.lower()
    if lower.endswith((".ndjson", ".jsonl")):
        return "ndjson"
    if lower.endswith((".pb", ".binpb")):
        return "otlp"
    head = body[:4096].lstrip()
    if b'"Records"' in head or b'"eventVersion"' in head:
        return "cloudtrail"
    if b"audit.k8s.io" in head:
        return "k8s"
    if b"resourceLogs" in head:
        return "otlp"
    if head.startswith((b"{", b"[")):
        return "json"
    raise InvalidInput(f"{name}: cannot tell the format; give --format")


#: ``where(position)``: how to name the item at a 0-based position of a batch to a person.
Where = Callable[[int], str]


def send_files(client: Client, files: list[str], fmt: str, batch_size: int) -> dict[str, Any]:
    summary: dict[str, Any] = {"accepted": 0, "duplicates": 0, "rejected": 0, "errors": []}
    from rich.console import Console

    with progress_bar("sending", Console(stderr=True)) as advance:
        sent = total = 0
        for name in files:
            body = _read(name)
            kind = detect_format(name, body) if fmt == "auto" else fmt
            if kind in ("json", "ndjson"):
                items, where = _parse_items(name, body, kind)
                total += len(items)  # the total known so far: each file is read when its turn comes
                for start in range(0, len(items), batch_size):
                    batch = items[start:start + batch_size]
                    _merge(summary, lambda position, start=start, where=where: where(start + position),
                           _post_events(client, batch))
                    sent += len(batch)
                    advance(sent, total)
            elif kind == "otlp":
                content_type = "application/json" if body.lstrip()[:1] == b"{" else "application/x-protobuf"
                _merge(summary, _counted(name, "record"),
                       _post_otlp(client, body, content_type))
            elif kind in SOURCE_ENDPOINTS:
                path, content_type = SOURCE_ENDPOINTS[kind]
                _merge(summary, _counted(name, "record"),
                       _post(client, path, body, content_type))
            else:
                raise InvalidInput(f"unknown format {kind!r}")
    return summary


def _parse_items(name: str, body: bytes, kind: str) -> tuple[list[Any], Where]:
    """The file's items and how to name each: its 1-based line (NDJSON) or item (JSON)."""
    content_type = "application/x-ndjson" if kind == "ndjson" else "application/json"
    try:
        items = parse_json_items(body, content_type)
    except InvalidInput as exc:
        item = exc.extensions.get("item")
        if item is None:
            raise InvalidInput(f"{name}: {exc.detail}; nothing of it was sent") from None
        # The parser names the 0-based array position; a person counts from 1.
        reason = exc.detail.replace(f"item {item}: ", "")
        raise InvalidInput(f"{name} item {item + 1}: {reason}; nothing of it was sent") from None
    if kind == "json":
        return items, _counted(name, "item")
    # The parser skips blank lines: map each item back to the line it came from.
    lines = [number for number, line in enumerate(body.split(b"\n"), 1) if line.strip()]
    return items, lambda position: f"{name} line {lines[position]}"


def _counted(name: str, noun: str) -> Where:
    return lambda position: f"{name} {noun} {position + 1}"


def _post_events(client: Client, batch: list[Any]) -> dict[str, Any]:
    lines = []
    for item in batch:
        if isinstance(item, BadItem):
            lines.append(b"{")  # keep the position; the server reports it as rejected
            continue
        if isinstance(item, dict) and "id" not in item:
            item = {**item, "id": new_event_id()}
        lines.append(orjson.dumps(item))
    answer = _post(client, "/v1/events", b"\n".join(lines), "application/x-ndjson")
    results = answer.get("results", [])
    for position, item in enumerate(batch):
        if isinstance(item, BadItem) and position < len(results):
            results[position]["error"] = item.reason  # why it did not parse here, not "{" there
    answer["errors"] = [error for error in answer.get("errors") or []
                        if not isinstance(batch[error.get("item", 0)], BadItem)]
    return answer


def _post(client: Client, path: str, body: bytes, content_type: str) -> dict[str, Any]:
    headers = {"Content-Type": content_type}
    if len(body) > GZIP_ABOVE:
        body = gzip.compress(body, compresslevel=1)
        headers["Content-Encoding"] = "gzip"
    from auditfed.cli.client import ApiError

    try:
        return client.request("POST", path, content=body, headers=headers).json()
    except ApiError as exc:
        # A 422 still lists per-item results: every item was rejected.
        if exc.status == 422 and "results" in exc.body:
            return {"accepted": 0, "duplicates": 0, "rejected": len(exc.body["results"]),
                    "results": exc.body["results"], "errors": exc.body.get("errors") or []}
        raise


def _post_otlp(client: Client, body: bytes, content_type: str) -> dict[str, Any]:
    """OTLP/HTTP answers in the request's encoding; partial success counts rejections."""
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
        ExportLogsServiceRequest,
        ExportLogsServiceResponse,
    )

    if content_type == "application/json":
        request = orjson.loads(body)
        records = sum(len(sl.get("logRecords") or []) for rl in request.get("resourceLogs") or []
                      for sl in rl.get("scopeLogs") or [])
    else:
        parsed = ExportLogsServiceRequest.FromString(body)
        records = sum(len(sl.log_records) for rl in parsed.resource_logs for sl in rl.scope_logs)
    headers = {"Content-Type": content_type}
    payload = body
    if len(body) > GZIP_ABOVE:
        payload = gzip.compress(body, compresslevel=1)
        headers["Content-Encoding"] = "gzip"
    response = client.request("POST", "/v1/logs", content=payload, headers=headers)
    if response.headers.get("content-type", "").startswith("application/x-protobuf"):
        answer = ExportLogsServiceResponse.FromString(response.content)
        rejected, message = answer.partial_success.rejected_log_records, answer.partial_success.error_message
    else:
        partial = (response.json() or {}).get("partialSuccess") or {}
        rejected, message = int(partial.get("rejectedLogRecords") or 0), partial.get("errorMessage")
    results = [{"status": "rejected", "error": message}] if rejected else []
    return {"accepted": records - rejected, "duplicates": 0, "rejected": rejected, "results": results}


def _merge(summary: dict[str, Any], where: Where, answer: dict[str, Any]) -> None:
    """Add a batch's counts, and one line per rejected item with every problem it has."""
    for key in ("accepted", "duplicates", "rejected"):
        summary[key] += answer.get(key, 0)
    problems: dict[int, list[str]] = {}
    for error in answer.get("errors") or []:
        path = error.get("path", "$")
        problems.setdefault(error.get("item", 0), []).append(
            error["reason"] if path == "$" else f"{path}: {error['reason']}")
    for position, result in enumerate(answer.get("results", [])):
        if result.get("status") == "rejected":
            reasons = "; ".join(problems.get(position) or [str(result.get("error"))])
            summary["errors"].append(f"{where(position)}: {reasons}")
