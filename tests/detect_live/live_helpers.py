"""Helpers of the live detection tests: a real webhook receiver, an SSE reader, configs."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
from standardwebhooks import Webhook, WebhookVerificationError
from support.server import Server

DATA = Path(__file__).resolve().parent.parent / "data"
CONSOLE_LOGIN = DATA / "cloudtrail" / "stratus-red-team" / "aws.initial-access.console-login-without-mfa.json"
CONSOLE_LOGIN_RULE = "AWS Successful Console Login Without MFA"
SECRET = "s3cret-hook-key"

PROBE_RULES = """\
title: Probe Burst
id: 6f1d2c1e-5a57-4c4e-9d55-0b7f3f7d1a01
status: test
correlation:
    type: event_count
    rules:
        - live_probe
    group-by:
        - actor.id
    timespan: 10m
    condition:
        gte: 3
level: high
---
title: Probe
id: 6f1d2c1e-5a57-4c4e-9d55-0b7f3f7d1a02
name: live_probe
status: test
logsource:
    product: auditfed
detection:
    selection:
        action: test.probe
    condition: selection
level: low
---
title: Single Marker
id: 6f1d2c1e-5a57-4c4e-9d55-0b7f3f7d1a03
status: test
logsource:
    product: auditfed
detection:
    selection:
        action: test.marker
    condition: selection
level: medium
---
title: Anything About Alerts
id: 6f1d2c1e-5a57-4c4e-9d55-0b7f3f7d1a04
status: test
logsource:
    product: auditfed
detection:
    selection:
        action|startswith: 'alert.'
    condition: selection
level: critical
"""


class Receiver:
    """A webhook receiver on loopback that answers by a script and records requests.

    ``script`` is a list of answers for the first requests ("fail": 500, "timeout":
    sleep past the sender's timeout then 503, "ok": 200, "redirect": 307 to
    ``location``); ``mode`` answers the rest.
    """

    def __init__(self, script: list[str] | None = None, mode: str = "ok", stall: float = 1.5,
                 location: str = "") -> None:
        self.script = list(script or [])
        self.mode = mode
        self.stall = stall
        self.location = location
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                received = time.time()
                with receiver.lock:
                    answer = receiver.script.pop(0) if receiver.script else receiver.mode
                    status = {"ok": 200, "fail": 500, "timeout": 503, "redirect": 307}[answer]
                    receiver.requests.append({"time": received, "headers": dict(self.headers),
                                              "body": body, "answer": answer, "status": status})
                if answer == "timeout":
                    time.sleep(receiver.stall)
                try:
                    self.send_response(status)
                    if answer == "redirect":
                        self.send_header("Location", receiver.location)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                except OSError:  # the sender gave up (timeout)
                    pass

            def log_message(self, *args: Any) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.http.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.http.serve_forever, daemon=True)
        self.thread.start()

    def ok(self) -> list[dict[str, Any]]:
        with self.lock:
            return [r for r in self.requests if r["answer"] == "ok"]

    def all(self) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.requests)

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()


def signature_ok(request: dict[str, Any], secret: str = SECRET) -> bool:
    """Both signatures check: Standard Webhooks (verified by its reference library; a
    plain secret is the raw key) and the deprecated ``X-Auditfed-Signature``."""
    key = secret if secret.startswith("whsec_") else secret.encode()
    try:
        Webhook(key).verify(request["body"], request["headers"], json_parse=False)
    except WebhookVerificationError:
        return False
    expected = "sha256=" + hmac.new(secret.encode(), request["body"], hashlib.sha256).hexdigest()
    return hmac.compare_digest(request["headers"].get("X-Auditfed-Signature", ""), expected)


def write_config(path: Path, *, webhooks: list[dict[str, Any]] = (), rules: list[Path] = (),  # type: ignore[assignment]
                 default_rules: bool = True, **settings: Any) -> Path:
    """A TOML config: ``settings`` are further top-level settings (JSON is TOML here)."""
    lines = [f"default_rules = {'true' if default_rules else 'false'}"]
    lines.append("rules = [" + ", ".join(json.dumps(str(p)) for p in rules) + "]")
    lines.extend(f"{key} = {json.dumps(value)}" for key, value in settings.items())
    for hook in webhooks:
        lines.append("[[webhooks]]")
        lines.extend(f"{key} = {json.dumps(value)}" for key, value in hook.items())
    path.write_text("\n".join(lines) + "\n")
    return path


def hook(receiver: Receiver, **extra: Any) -> dict[str, Any]:
    return {"url": receiver.url, "secret": SECRET, "timeout": 0.5, "backoff_initial": 0.1,
            "backoff_max": 0.5, **extra}


def wait_until(check: Callable[[], Any], timeout: float = 15.0, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(interval)


def ingest_console_login(client: httpx.Client) -> int:
    """Send the Stratus console-login-without-MFA record; its log index."""
    body = CONSOLE_LOGIN.read_bytes()
    response = client.post("/v1/ingest/cloudtrail", content=body,
                           headers={"Content-Type": "application/json"})
    if response.status_code == 404:  # the source route is not there: normalise here
        from auditfed.sources import decode

        events = decode("cloudtrail", body, "application/json", {}).events
        response = client.post("/v1/events", json=events)
    assert response.status_code == 200, response.text
    [result] = response.json()["results"]
    return result["index"]


def alerts(client: httpx.Client, **params: Any) -> list[dict[str, Any]]:
    response = client.get("/v1/alerts", params=params)
    assert response.status_code == 200, response.text
    return response.json()["alerts"]


def probe(actor: str, when: datetime, action: str = "test.probe") -> dict[str, Any]:
    return {"action": action, "outcome": "success", "actor": {"id": actor},
            "source": {"service": "probe-svc", "kind": "app"},
            "time": when.isoformat().replace("+00:00", "Z")}


def now() -> datetime:
    return datetime.now(UTC)


def seconds(n: float) -> timedelta:
    return timedelta(seconds=n)


def post_events(client: httpx.Client, events: list[dict[str, Any]]) -> list[int]:
    response = client.post("/v1/events", json=events)
    assert response.status_code == 200, response.text
    return [r["index"] for r in response.json()["results"]]


def log_events(client: httpx.Client) -> list[tuple[int, dict[str, Any]]]:
    """Every event in the log, via the public log API."""
    import base64

    found: list[tuple[int, dict[str, Any]]] = []
    size = client.get("/healthz").json()["size"]
    start = 0
    while start < size:
        response = client.get("/v1/log/entries", params={"start": start, "end": min(start + 1000, size)})
        assert response.status_code == 200, response.text
        entries = response.json()["entries"]
        for entry in entries:
            found.append((entry["index"], json.loads(base64.b64decode(entry["data"]))))
        start = entries[-1]["index"] + 1
    return found


class SSEReader:
    """Reads ``GET /v1/alerts/stream`` in a thread; ``events`` holds (id, data) pairs."""

    def __init__(self, server: Server, token: str, headers: dict[str, str] | None = None) -> None:
        self.events: list[tuple[str | None, dict[str, Any]]] = []
        self.connected = threading.Event()
        self.client = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"},
                                   timeout=httpx.Timeout(30, read=None))
        self.headers = headers or {}
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert self.connected.wait(10), "the stream did not open"

    def _run(self) -> None:
        try:
            with self.client.stream("GET", "/v1/alerts/stream", headers=self.headers) as response:
                assert response.status_code == 200
                assert response.headers["content-type"].startswith("text/event-stream")
                event_id: str | None = None
                data: list[str] = []
                for line in response.iter_lines():
                    self.connected.set()
                    if line.startswith("id:"):
                        event_id = line[3:].strip()
                    elif line.startswith("data:"):
                        data.append(line[5:].strip())
                    elif line == "" and data:
                        self.events.append((event_id, json.loads("\n".join(data))))
                        event_id, data = None, []
        except httpx.HTTPError:
            pass
        finally:
            self.connected.set()

    def close(self) -> None:
        self.client.close()
