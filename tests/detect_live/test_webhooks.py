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

from live_helpers import Receiver, alerts, hook, ingest_console_login, signature_ok, wait_until, write_config
from support.server import Server


def _check_attempts(receiver: Receiver) -> dict:
    requests = receiver.all()
    assert len({r["headers"]["X-Auditfed-Delivery"] for r in requests}) == 1
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
