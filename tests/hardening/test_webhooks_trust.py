"""Webhooks worth trusting (issue 16, item 7), against a real server and real receivers.

- Deliveries verify with the ``standardwebhooks`` reference library, through the very
  function docs/configuration.md gives receivers; a retry keeps ``webhook-id`` and is
  signed anew for its own timestamp; a tampered body, timestamp or id fails.
- A webhook URL's credentials never reach the server's output (stdout and stderr), at
  start or after failed and given-up deliveries, nor the errors kept in the outbox.
- ``webhook_allowed_hosts`` refuses other hosts at start, naming the host; redirects
  are not followed.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
from detect_live.live_helpers import SECRET, Receiver, hook, ingest_console_login, wait_until, write_config
from standardwebhooks import Webhook as Verifier
from standardwebhooks import WebhookVerificationError
from support.server import Server, free_port

from auditfed.detect.service import Webhook
from auditfed.detect.webhooks import HostAllowList, signing_key
from auditfed.errors import ConfigError
from auditfed.safeurl import redact_url, scrub

DOCS = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"
WHSEC = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
PASSWORD, API_KEY, TOKEN = "hunter2-pass", "AK-live-0001", "tok-live-0002"


def _docs_verifier() -> Any:
    """``verify_alert`` exactly as docs/configuration.md shows it to receivers."""
    [snippet] = re.findall(r"```python\n(.*?def verify_alert.*?)```", DOCS.read_text(), re.S)
    namespace: dict[str, Any] = {}
    exec(compile(snippet, str(DOCS), "exec"), namespace)
    return namespace["verify_alert"]


def _with_credentials(url: str) -> str:
    return url.replace("http://", f"http://siem:{PASSWORD}@") + f"?api_key={API_KEY}&token={TOKEN}&team=secops"


def _assert_no_credentials(text: str) -> None:
    for secret in (PASSWORD, API_KEY, TOKEN):
        assert secret not in text


def test_deliveries_verify_per_standard_webhooks_and_a_retry_keeps_its_id(tmp_path: Path) -> None:
    plain = Receiver(script=["fail"])  # one retry, at least 1.2 s later (backoff 1.5 s ± 20 %)
    spec = Receiver()
    config = write_config(tmp_path / "c.toml", webhook_allowed_hosts=["127.0.0.1"], webhooks=[
        hook(plain, name="plain", backoff_initial=1.5, backoff_max=1.5),
        hook(spec, name="spec", secret=WHSEC, legacy_signature=False)])
    server = Server(tmp_path / "data", "--config", str(config)).start()
    try:
        with server.client(server.admin_token) as admin:
            ingest_console_login(admin)
        wait_until(plain.ok, timeout=20)
        wait_until(spec.ok)
    finally:
        server.stop()
        plain.close()
        spec.close()
    verify_alert = _docs_verifier()

    first, retry = plain.all()
    for attempt in (first, retry):
        assert verify_alert(SECRET, attempt["body"], attempt["headers"])["rule_id"]
        assert attempt["headers"]["X-Auditfed-Signature"].startswith("sha256=")  # deprecated, still sent
    assert first["headers"]["webhook-id"] == retry["headers"]["webhook-id"] == first["headers"]["X-Auditfed-Delivery"]
    assert first["headers"]["webhook-timestamp"] != retry["headers"]["webhook-timestamp"]
    assert first["headers"]["webhook-signature"] != retry["headers"]["webhook-signature"]
    assert abs(int(retry["headers"]["webhook-timestamp"]) - retry["time"]) < 60  # the attempt's own time

    [delivered] = spec.all()
    assert verify_alert(WHSEC, delivered["body"], delivered["headers"])["id"]
    assert "X-Auditfed-Signature" not in delivered["headers"]  # legacy_signature = false
    assert delivered["headers"]["webhook-id"] != first["headers"]["webhook-id"]  # one id per webhook

    headers = first["headers"]
    tampered = [
        (first["body"].replace(b'"level":"medium"', b'"level":"low"'), headers),
        (first["body"], {**headers, "webhook-timestamp": str(int(headers["webhook-timestamp"]) + 1)}),
        (first["body"], {**headers, "webhook-id": "another-delivery"}),
        (first["body"], {k: v for k, v in headers.items() if k != "webhook-signature"}),
    ]
    assert tampered[0][0] != first["body"]
    for body, changed in tampered:
        with pytest.raises(WebhookVerificationError):
            verify_alert(SECRET, body, changed)
    with pytest.raises(WebhookVerificationError):  # another key
        Verifier(WHSEC).verify(first["body"], headers)


def test_credentials_in_webhook_urls_never_reach_the_server_output(tmp_path: Path) -> None:
    failing = Receiver(mode="fail")
    closed = f"http://127.0.0.1:{free_port()}/hook"  # nothing listens: a transport error
    config = write_config(tmp_path / "c.toml", webhooks=[
        {**hook(failing), "url": _with_credentials(failing.url), "max_attempts": 2},
        {"url": _with_credentials(closed), "timeout": 0.5, "backoff_initial": 0.1, "backoff_max": 0.2,
         "max_attempts": 2},  # no secret: the start warns about it, naming the webhook
    ])
    server = Server(tmp_path / "data", "--config", str(config)).start()
    try:
        with server.client(server.admin_token) as admin:
            ingest_console_login(admin)
        wait_until(lambda: server.log_path.read_text().count('"webhook delivery given up"') >= 2, timeout=30)
        errors = [row[0] for row in server.sql("SELECT last_error FROM webhook_outbox")]
    finally:
        server.stop()
        failing.close()
    output = server.log_path.read_text()  # the subprocess's stdout and stderr
    assert len(failing.all()) == 2
    assert '"webhook without a secret' in output and '"webhook delivery failed"' in output
    assert redact_url(_with_credentials(failing.url)) in output
    assert f"http://***@127.0.0.1:{failing.http.server_address[1]}/hook?api_key=***&token=***&team=secops" \
        in output
    assert any("ConnectError" in (e or "") for e in errors)
    _assert_no_credentials(output)
    _assert_no_credentials(json.dumps(errors))


def test_a_host_not_on_the_allow_list_stops_the_start_with_a_message(tmp_path: Path) -> None:
    config = write_config(tmp_path / "c.toml", webhooks=[
        {"url": _with_credentials("http://127.0.0.1:9/hook"), "secret": SECRET}])
    server = Server(tmp_path / "data", "--config", str(config),
                    env={"AUDITFED_WEBHOOK_ALLOWED_HOSTS": '[".corp.example", "10.0.0.0/8"]'})
    with pytest.raises(RuntimeError) as refused:
        server.start(timeout=30)
    message = str(refused.value)
    assert "host '127.0.0.1' is not in webhook_allowed_hosts (.corp.example, 10.0.0.0/8)" in message
    _assert_no_credentials(message)


def test_redirects_are_not_followed(tmp_path: Path) -> None:
    elsewhere = Receiver()
    redirecting = Receiver(mode="redirect", location=elsewhere.url)
    config = write_config(tmp_path / "c.toml", webhooks=[hook(redirecting, max_attempts=1)])
    server = Server(tmp_path / "data", "--config", str(config)).start()
    try:
        with server.client(server.admin_token) as admin:
            ingest_console_login(admin)
        wait_until(lambda: '"webhook delivery given up"' in server.log_path.read_text())
        time.sleep(0.5)
    finally:
        server.stop()
        redirecting.close()
        elsewhere.close()
    assert len(redirecting.all()) == 1
    assert elsewhere.all() == []
    assert "HTTP 307" in server.log_path.read_text()


def test_the_federation_upstream_is_shown_without_credentials(tmp_path: Path) -> None:
    """The same rendering wherever a configured URL is shown: here the upstream hub's."""
    upstream = _with_credentials(f"http://127.0.0.1:{free_port()}/hub")  # nothing listens
    server = Server(tmp_path / "data", "--node-name", "eu", "--upstream", upstream,
                    "--upstream-token", "not-a-real-token").start()
    try:
        with server.client(server.admin_token) as admin:
            status = wait_until(lambda: (s := admin.get("/v1/federation/status").json()["upstream"])
                                ["last_error"] and s)
        assert status["upstream"] == redact_url(upstream)
        assert status["upstream"].startswith("http://***@127.0.0.1:")
        _assert_no_credentials(json.dumps(status))
    finally:
        server.stop()
    _assert_no_credentials(server.log_path.read_text())


# --- the parts on their own ------------------------------------------------------------


@pytest.mark.parametrize(("url", "shown"), [
    ("https://user:pw@siem.example/in?api_key=K1&x=1", "https://***@siem.example/in?api_key=***&x=1"),
    ("https://siem.example/in?access_token=T&X-Amz-Signature=S&page=2",
     "https://siem.example/in?access_token=***&X-Amz-Signature=***&page=2"),
    ("https://hooks.slack.com/services/T0001/B0001/AbCdEfGhIjKlMnOp12345678",
     "https://hooks.slack.com/services/T0001/B0001/***"),
    ("http://127.0.0.1:8080/hook", "http://127.0.0.1:8080/hook"),
    ("http://[::1:80/bad", "***"),
])
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_scrub_removes_a_urls_credentials_from_text() -> None:
    url = "https://bob:s%40cret@siem.example/in?token=abc123"
    text = scrub(f"ConnectError for {url} (user bob, password s@cret, token abc123)", url)
    assert "s@cret" not in text and "s%40cret" not in text and "abc123" not in text
    assert "https://***@siem.example/in?token=***" in text


def test_a_webhook_shows_itself_without_credentials() -> None:
    webhook = Webhook.from_config({"url": _with_credentials("https://siem.example/in"), "secret": SECRET})
    _assert_no_credentials(webhook.label + repr(webhook))
    assert SECRET not in repr(webhook)
    assert Webhook.from_config({"url": "https://siem.example/in", "name": "siem"}).label == "siem"


@pytest.mark.parametrize("secret", ["whsec_", "whsec_not*base64!"])
def test_a_malformed_whsec_secret_is_refused(secret: str) -> None:
    with pytest.raises(ConfigError, match="whsec_"):
        Webhook.from_config({"url": "https://siem.example/in", "secret": secret})
    assert signing_key("plain secret") == b"plain secret"


def test_the_allow_list() -> None:
    allowed = HostAllowList.parse(["siem.corp.example", ".hooks.example", "10.0.0.0/8", "::1"])
    assert [allowed.allows(h) for h in ("SIEM.corp.example", "a.hooks.example", "hooks.example",
                                        "10.1.2.3", "::1")] == [True] * 5
    assert [allowed.allows(h) for h in ("corp.example", "evilhooks.example", "11.0.0.1",
                                        "127.0.0.1", "localhost")] == [False] * 5
    for bad in ("", "https://siem.example", "*.example", "10.0.0.0/33"):
        with pytest.raises(ConfigError, match="webhook_allowed_hosts"):
            HostAllowList.parse([bad])
    with pytest.raises(ConfigError, match="not in webhook_allowed_hosts"):
        Webhook.from_config({"url": "https://siem.example/in"}, allowed)
