"""The auditfed command as users run it: init, tokens, send, verify, prove, search."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import orjson
from support.server import Server, run_cli


def test_init_creates_a_private_key_and_prints_the_admin_token_once(tmp_path: Path) -> None:
    data = tmp_path / "d"
    result = run_cli("init", "--data", str(data), "--origin", "audit.example/prod", check=True)
    assert result.stdout.strip().startswith("afd_")
    assert "audit.example/prod+" in result.stderr
    assert (data / "log.key").stat().st_mode & 0o777 == 0o600
    again = run_cli("init", "--data", str(data))
    assert again.returncode == 1 and "already initialised" in again.stderr


def test_token_create_prints_only_the_token_and_a_running_server_honours_it(fresh_server: Server) -> None:
    result = run_cli("token", "create", "--role", "source", "--service", "svc", "--data",
                     str(fresh_server.data_dir), check=True)
    token = result.stdout.strip()
    assert token.startswith("afd_") and "\n" not in token
    deadline = time.monotonic() + 1.5
    with fresh_server.client(token) as http:
        while True:
            r = http.post("/v1/events", json={"action": "a.b", "actor": {"id": "x"}})
            if r.status_code == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
    assert r.status_code == 200
    listed = run_cli("token", "list", "--data", str(fresh_server.data_dir), "--json", check=True)
    records = json.loads(listed.stdout)
    assert {r["role"] for r in records} == {"admin", "source"} and token not in listed.stdout
    source_id = next(r["token_id"] for r in records if r["role"] == "source")
    run_cli("token", "revoke", source_id, "--data", str(fresh_server.data_dir), check=True)
    time.sleep(1.2)
    with fresh_server.client(token) as http:
        r = http.post("/v1/events", json={"action": "a.b", "actor": {"id": "x"}})
    assert r.status_code == 401 and "revoked" in r.json()["detail"]


def test_token_create_through_the_api(fresh_server: Server) -> None:
    result = run_cli("token", "create", "--role", "auditor", "--url", fresh_server.url,
                     "--token", fresh_server.admin_token, check=True)
    with fresh_server.client(result.stdout.strip()) as http:
        assert http.get("/v1/events").status_code == 200


def test_token_create_initialises_a_fresh_data_dir(tmp_path: Path) -> None:
    result = run_cli("token", "create", "--role", "auditor", "--data", str(tmp_path / "new"), check=True)
    assert result.stdout.strip().startswith("afd_") and "admin token" in result.stderr


def test_send_verify_prove_and_search(fresh_server: Server, tmp_path: Path) -> None:
    source = fresh_server.token("source", service="web")
    events = [{"action": "http.request", "actor": {"id": f"user{i % 5}"}, "resource": {"id": f"/r/{i}"}}
              for i in range(2500)]
    (tmp_path / "a.json").write_bytes(orjson.dumps(events[:1000]))
    (tmp_path / "b.ndjson").write_bytes(b"\n".join(orjson.dumps(e) for e in events[1000:]))
    env = {"AUDITFED_URL": fresh_server.url, "AUDITFED_TOKEN": source}
    sent = run_cli("send", str(tmp_path / "a.json"), str(tmp_path / "b.ndjson"), "--json",
                   "--batch-size", "700", env=env, check=True)
    assert json.loads(sent.stdout)["accepted"] == 2500
    # From stdin; an event with an id sent twice is stored once.
    piped = run_cli("send", "-", "--format", "ndjson", "--json", env=env, check=True,
                    input=orjson.dumps({"id": "fixed", "action": "a.b", "actor": {"id": "z"}}))
    assert json.loads(piped.stdout)["accepted"] == 1
    again = run_cli("send", "-", "--format", "ndjson", "--json", env=env, check=True,
                    input=orjson.dumps({"id": "fixed", "action": "a.b", "actor": {"id": "z"}}))
    assert json.loads(again.stdout)["duplicates"] == 1

    # The events, and the records the log made of itself (the token's creation, alerts).
    stored = [orjson.loads(data) for (data,) in fresh_server.sql("SELECT data FROM events")]
    assert sum(e["source"]["service"] == "web" for e in stored) == 2501
    data = ["--data", str(fresh_server.data_dir)]
    verified = run_cli("verify", *data, check=True)
    assert f"ok: {len(stored)} entries" in verified.stdout
    key = httpx.get(f"{fresh_server.url}/v1/log/key").text.strip()
    remote = ["--url", fresh_server.url, "--key", key, "--token", fresh_server.admin_token]
    assert f"ok: {len(stored)} entries" in run_cli("verify", *remote, check=True).stdout

    note = run_cli("checkpoint", *remote, check=True).stdout
    size = int(note.splitlines()[1])
    proof = json.loads(run_cli("proof", "inclusion", "1234", *remote, "--json", check=True).stdout)
    assert proof["verified"] and proof["size"] == size
    assert "included" in run_cli("proof", "inclusion", "7", *data, check=True).stdout

    early = run_cli("checkpoint", *data, check=True)
    assert early.returncode == 0
    sizes = sorted({int(r.split()[0]) for r in _checkpoint_sizes(fresh_server)})
    old, new = sizes[1], sizes[-1]
    consistent = run_cli("proof", "consistency", str(old), str(new), *remote, check=True)
    assert f"size {new} is consistent with size {old}" in consistent.stdout

    found = run_cli("search", "actor:user3 resource:/r/13", *data, "--json", check=True)
    assert [e["event"]["resource"]["id"] for e in json.loads(found.stdout)] == ["/r/13"]
    table = run_cli("search", "actor:user3", "--limit", "3", "--url", fresh_server.url,
                    "--token", fresh_server.admin_token, check=True)
    assert table.stdout.count("http.request") == 3


def _checkpoint_sizes(server: Server) -> list[str]:
    return [f"{size} x" for (size,) in server.sql("SELECT size FROM checkpoints")]


def test_a_checkpoint_under_another_key_is_refused(fresh_server: Server) -> None:
    from auditfed.ledger import Signer

    # Same name, different key: what an impostor server would present.
    stranger = Signer.generate(httpx.get(f"{fresh_server.url}/v1/log/key").text.split("+")[0])
    result = run_cli("checkpoint", "--url", fresh_server.url, "--key", stranger.verifier_key())
    assert result.returncode == 1 and "error" in result.stderr


def test_cli_errors_are_clear(tmp_path: Path) -> None:
    missing = run_cli("verify", "--data", str(tmp_path / "nothing"))
    assert missing.returncode == 1 and "no log key" in missing.stderr
    unreachable = run_cli("send", "-", "--url", "http://127.0.0.1:9", "--token", "afd_x",
                          input=b'{"action":"a","actor":{"id":"b"}}', timeout=120)
    assert unreachable.returncode == 1 and "cannot reach" in unreachable.stderr
