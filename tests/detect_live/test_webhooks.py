"""Webhook delivery from the durable outbox against a real HTTP receiver.

The receiver fails (500), times out, then recovers: the alert is delivered exactly
once after recovery (every attempt carries the same delivery id and a valid
signature), also when the server is killed while the receiver is down.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest
from live_helpers import Receiver, alerts, hook, ingest_console_login, signature_ok, wait_until, write_config
from support.server import Server

from auditfed.detect.service import Webhook
from auditfed.errors import ConfigError


def _check_attempts(receiver: Receiver) -> dict:
    requests = receiver.all()
    assert len({r["headers"]["X-Auditfed-Delivery"] for r in requests}) == 1
    assert {r["headers"]["webhook-id"] for r in requests} == {requests[0]["headers"]["X-Auditfed-Delivery"]}
    assert all(signature_ok(r) for r in requests)
    assert len({r["body"] for r in requests}) == 1
    return json.loads(requests[0]["body"])


def test_fails_times_out_then_recovers(tmp_path: Path, store: str | None) -> None:
    receiver = Receiver(script=["fail", "fail", "timeout", "fail"], mode="ok")
    config = write_config(tmp_path / "c.toml", webhooks=[hook(receiver)])
    server = Server(tmp_path / "data", "--config", str(config), store=store).start()
    try:
        with server.client(server.admin_token) as admin:
            matched = ingest_console_login(admin)
            wait_until(receiver.ok, timeout=20)
            time.sleep(1.5)  # any extra delivery would arrive by now
            assert len(receiver.ok()) == 1
            assert [r["answer"] for r in receiver.all()] == ["fail", "fail", "timeout", "fail", "ok"]
            body = _check_attempts(receiver)
            [alert] = alerts(admin)
            assert body["id"] == alert["id"] and body["indexes"] == [matched]
    finally:
        server.stop()
        receiver.close()


def test_outbox_survives_a_crash_while_the_receiver_is_down(tmp_path: Path, store: str | None) -> None:
    receiver = Receiver(mode="fail")
    config = write_config(tmp_path / "c.toml", webhooks=[hook(receiver, backoff_max=0.3)])
    server = Server(tmp_path / "data", "--config", str(config), store=store).start()
    try:
        with server.client(server.admin_token) as admin:
            ingest_console_login(admin)
        wait_until(lambda: len(receiver.all()) >= 2)
        server.kill(signal.SIGKILL)
        receiver.mode = "ok"
        time.sleep(0.5)
        assert receiver.ok() == []

        server.start()
        wait_until(receiver.ok)
        time.sleep(1.5)
        assert len(receiver.ok()) == 1
        _check_attempts(receiver)
        # A graceful restart after delivery sends nothing again.
        server.stop()
        server.start()
        time.sleep(1.0)
        assert len(receiver.ok()) == 1
    finally:
        server.stop()
        receiver.close()


def test_two_webhooks_and_a_level_filter(tmp_path: Path) -> None:
    everything, urgent = Receiver(), Receiver()
    config = write_config(tmp_path / "c.toml", webhooks=[
        hook(everything, name="all"), hook(urgent, name="urgent", min_level="high")])
    server = Server(tmp_path / "data", "--config", str(config)).start()
    try:
        with server.client(server.admin_token) as admin:
            ingest_console_login(admin)  # a medium alert
        wait_until(everything.ok)
        time.sleep(0.5)
        assert len(everything.ok()) == 1
        assert urgent.all() == []
    finally:
        server.stop()
        everything.close()
        urgent.close()


def test_a_bad_webhook_config_stops_the_server_with_a_message(tmp_path: Path) -> None:
    config = write_config(tmp_path / "c.toml", webhooks=[{"url": "ftp://example.com/x"}])
    server = Server(tmp_path / "data", "--config", str(config))
    try:
        server.start(timeout=20)
    except RuntimeError as exc:
        assert "http(s) URL" in str(exc)
    else:  # pragma: no cover
        server.stop()
        raise AssertionError("the server started with a bad webhook")


@pytest.mark.parametrize("value", [-1, "3", 2.5, True])
def test_max_attempts_must_be_a_whole_number_of_attempts(value: object) -> None:
    with pytest.raises(ConfigError, match="max_attempts"):
        Webhook.from_config({"url": "https://siem.example/hook", "max_attempts": value})


def test_a_delivery_is_given_up_after_max_attempts(tmp_path: Path, store: str | None) -> None:
    """A receiver that never recovers gets ``max_attempts`` attempts, then none, also
    after a restart; the alert itself stays listed."""
    receiver = Receiver(mode="fail")
    config = write_config(tmp_path / "c.toml", webhooks=[
        hook(receiver, max_attempts=3, backoff_initial=0.05, backoff_max=0.1)])
    server = Server(tmp_path / "data", "--config", str(config), store=store).start()
    try:
        with server.client(server.admin_token) as admin:
            ingest_console_login(admin)
            wait_until(lambda: len(receiver.all()) >= 3)
            time.sleep(1.0)  # a fourth attempt would come within 0.1 s
            assert len(receiver.all()) == 3
            _check_attempts(receiver)
            metrics = admin.get("/metrics").text
            assert "auditfed_webhook_given_up_total 1.0" in metrics
            assert '"webhook delivery given up"' in server.log_path.read_text()
        server.stop()
        server.start()
        time.sleep(1.0)
        assert len(receiver.all()) == 3
        with server.client(server.admin_token) as admin:
            assert len(alerts(admin)) == 1
    finally:
        server.stop()
        receiver.close()
