"""Crash and shutdown: nothing acknowledged is lost, checkpoints stay consistent."""

from __future__ import annotations

import base64
import signal
import threading
import time
import uuid
from pathlib import Path

import httpx
import orjson
from support.server import Server, run_cli

from auditfed.ledger import Verifier, verify_checkpoint, verify_consistency


def ingest_until_stopped(server: Server, token: str, stop: threading.Event,
                         acked: dict[str, int], errors: list[str]) -> None:
    with server.client(token) as http:
        while not stop.is_set():
            batch = [{"id": str(uuid.uuid4()), "action": "db.write", "actor": {"id": "w"}}
                     for _ in range(200)]
            try:
                r = http.post("/v1/events", json=batch)
            except httpx.TransportError:
                return  # the server is gone: nothing more can be acknowledged
            if r.status_code == 200:
                for result in r.json()["results"]:
                    acked[result["id"]] = result["index"]
            elif r.status_code != 503:
                errors.append(r.text)


def run_writers(server: Server, token: str, seconds: float, then) -> tuple[dict[str, int], list[str]]:
    acked: dict[str, int] = {}
    errors: list[str] = []
    stop = threading.Event()
    writers = [threading.Thread(target=ingest_until_stopped, args=(server, token, stop, acked, errors))
               for _ in range(4)]
    for w in writers:
        w.start()
    time.sleep(seconds)
    then()
    stop.set()
    for w in writers:
        w.join(timeout=60)
    return acked, errors


def assert_all_present(server: Server, acked: dict[str, int]) -> None:
    stored: dict[str, int] = {}
    with server.client(server.admin_token) as http:
        size = http.get("/healthz").json()["size"]
        while len(stored) < size:
            page = http.get("/v1/log/entries", params={"start": len(stored), "end": size}).json()
            for entry in page["entries"]:
                stored[orjson.loads(base64.b64decode(entry["data"]))["id"]] = entry["index"]
    missing = {i: x for i, x in acked.items() if stored.get(i) != x}
    assert not missing, f"{len(missing)} acknowledged events lost or moved"


def test_kill_9_loses_nothing_acknowledged(tmp_path: Path, store: str | None) -> None:
    server = Server(tmp_path / "data", store=store).start()
    token = server.token("source", service="db")
    acked, errors = run_writers(server, token, 2.0, lambda: server.kill(signal.SIGKILL))
    assert not errors and len(acked) > 0
    last_before = server.sql("SELECT size, note FROM checkpoints ORDER BY size DESC LIMIT 1")[0]

    server.start()
    try:
        assert_all_present(server, acked)
        assert "ok:" in run_cli("verify", "--data", str(server.data_dir), check=True).stdout
        with server.client(server.admin_token) as http:
            key = Verifier.from_key(http.get("/v1/log/key").text.strip())
            old = verify_checkpoint(last_before[1], key)
            http.post("/v1/events", json={"action": "a.b", "actor": {"id": "after"}, "source": {"service": "x"}})
            new = verify_checkpoint(http.get("/v1/log/checkpoint").text, key)
            assert new.size > old.size
            proof = http.get("/v1/log/proof/consistency", params={"old": old.size, "new": new.size}).json()
            verify_consistency(old.size, new.size, old.root, new.root,
                               [base64.b64decode(h) for h in proof["hashes"]])
    finally:
        server.stop()


def test_sigterm_finishes_in_flight_work_then_refuses(tmp_path: Path, store: str | None) -> None:
    server = Server(tmp_path / "data", store=store).start()
    token = server.token("source", service="db")
    codes: list[int] = []

    def terminate_and_probe() -> None:
        assert server.process is not None
        server.process.send_signal(signal.SIGTERM)
        time.sleep(0.05)
        try:
            codes.append(httpx.post(f"{server.url}/v1/events", json={}, timeout=5).status_code)
        except httpx.TransportError:
            codes.append(0)  # already closed: also a refusal

    acked, errors = run_writers(server, token, 1.5, terminate_and_probe)
    assert server.process is not None and server.process.wait(timeout=60) == 0
    assert not errors and acked
    assert codes[0] in (0, 503)
    [(signed,)] = server.sql("SELECT MAX(size) FROM checkpoints")
    [(stored,)] = server.sql("SELECT COUNT(*) FROM events")
    assert signed == stored == server.indexed_size()  # a final checkpoint and index cover everything
    server.start()
    try:
        assert_all_present(server, acked)
    finally:
        server.stop()
