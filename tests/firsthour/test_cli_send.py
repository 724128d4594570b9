"""Issue #18: ``auditfed send`` names every rejection where an editor finds it (1-based)
and exits 1 when anything was rejected."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
from support.server import Server, run_cli


def _event(i: int) -> bytes:
    return orjson.dumps({"action": "http.request", "actor": {"id": f"user{i}"}})


def test_ndjson_rejections_name_their_lines_from_1_and_every_one_is_listed(
        fresh_server: Server, tmp_path: Path) -> None:
    lines = [_event(i) for i in range(150)]
    lines[100] = b'{"action": "no actor"}'                     # line 101: fails the schema
    lines[119] = b'{"action": 5, "actor": {"id": 7}}'          # line 120: two problems at once
    lines[139] = b'{"action": "a.b", "actor": '                # line 141 (after the blank line): not JSON
    lines.insert(130, b"")                                     # blank lines still count as lines
    path = tmp_path / "events.ndjson"
    path.write_bytes(b"\n".join(lines) + b"\n")
    env = {"AUDITFED_URL": fresh_server.url, "AUDITFED_TOKEN": fresh_server.token("source", service="web")}

    result = run_cli("send", str(path), "--batch-size", "60", env=env)

    assert result.returncode == 1, result.stderr
    assert "accepted 147, duplicates 0, rejected 3" in result.stderr
    rejected = [line for line in result.stderr.splitlines() if "rejected " in line and ".ndjson" in line]
    assert [line.split(".ndjson ")[1].split(":")[0] for line in rejected] == ["line 101", "line 120", "line 141"]
    two_problems = rejected[1]
    assert "action" in two_problems and "actor.id" in two_problems and "more)" not in two_problems
    assert "not valid JSON" in rejected[2]

    as_json = run_cli("send", str(path), "--json", env=env)
    assert as_json.returncode == 1
    summary = json.loads(as_json.stdout)
    assert summary["rejected"] == 3 and summary["duplicates"] == 0  # the good ones had no id: sent anew
    assert [e.split(": ")[0] for e in summary["errors"]] == [
        f"{path} line 101", f"{path} line 120", f"{path} line 141"]


def test_json_array_rejections_name_their_items_from_1(fresh_server: Server, tmp_path: Path) -> None:
    items = [{"action": "a.b", "actor": {"id": "u"}}, {"action": "a.b"}, {"action": "a.b", "actor": {"id": "v"}}]
    path = tmp_path / "events.json"
    path.write_bytes(orjson.dumps(items))
    env = {"AUDITFED_URL": fresh_server.url, "AUDITFED_TOKEN": fresh_server.token("source", service="web")}
    result = run_cli("send", str(path), env=env)
    assert result.returncode == 1
    assert f"{path} item 2: " in result.stderr and "item 1:" not in result.stderr


def test_a_file_refused_whole_names_its_item_from_1(tmp_path: Path) -> None:
    path = tmp_path / "dup.json"
    path.write_bytes(b'[{"action":"a.b","actor":{"id":"u"}},{"action":"a.b","actor":{"id":"u"},"n":1,"n":2}]')
    result = run_cli("send", str(path), "--url", "http://127.0.0.1:9", "--token", "afd_x")
    assert result.returncode == 1
    assert f"{path} item 2: " in result.stderr and "duplicate member name 'n'" in result.stderr
    assert result.stdout == ""


def test_the_progress_bar_shows_the_total(fresh_server: Server, tmp_path: Path) -> None:
    import os
    import pty
    import subprocess

    from support.server import AUDITFED

    path = tmp_path / "events.ndjson"
    path.write_bytes(b"\n".join(_event(i) for i in range(150)))
    env = {**os.environ, "AUDITFED_URL": fresh_server.url, "COLUMNS": "120",
           "AUDITFED_TOKEN": fresh_server.token("source", service="web")}
    env.pop("NO_COLOR", None)
    controller, terminal = pty.openpty()  # rich draws the bar only on a terminal
    process = subprocess.Popen([*AUDITFED, "send", str(path), "--batch-size", "50"], env=env,
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=terminal)
    os.close(terminal)
    drawn = b""
    while True:
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # the other end closed: the command has finished
            break
        if not chunk:
            break
        drawn += chunk
    os.close(controller)
    assert process.wait(timeout=120) == 0
    assert b"/150" in drawn and b"accepted 150" in drawn
