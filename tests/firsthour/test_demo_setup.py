"""What `make demo` sets up, without running a server (issue #18, point 5): every
initialisation keeps the admin token in `<data dir>/admin.token` (mode 0600),
`make demo PORT=N` serves on N, and the demo's events let the interesting alerts
stand out instead of burying them under "Change Without a Reason"."""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

from support.server import run_cli

from auditfed.demo import demo_round

REPO = Path(__file__).resolve().parents[2]


def test_init_keeps_the_printed_admin_token_in_a_private_file(tmp_path: Path) -> None:
    data = tmp_path / "auditfed-data"
    printed = run_cli("init", "--data", str(data), check=True)
    token_file = data / "admin.token"
    assert token_file.stat().st_mode & 0o777 == 0o600
    assert token_file.read_text().strip() == printed.stdout.strip()
    assert str(token_file) in printed.stderr


def test_token_create_on_a_new_data_dir_keeps_the_admin_token_too(tmp_path: Path) -> None:
    data = tmp_path / "d"
    created = run_cli("token", "create", "--role", "auditor", "--data", str(data), check=True)
    admin = (data / "admin.token").read_text().strip()
    assert (data / "admin.token").stat().st_mode & 0o777 == 0o600
    assert admin.startswith("afd_") and admin in created.stderr and admin != created.stdout.strip()


def _make_demo(*variables: str) -> str:
    """The command `make demo` would run (make -n: nothing is installed or run)."""
    result = subprocess.run(["make", "-n", "demo", *variables], cwd=REPO, capture_output=True, text=True,
                            timeout=60, check=True)
    return next(line for line in result.stdout.splitlines() if " serve --demo " in line)


def test_make_demo_takes_a_port() -> None:
    assert "--listen 127.0.0.1:8401" in _make_demo("PORT=8401")
    assert "--listen 127.0.0.1:8400" in _make_demo()


def test_the_demo_story_stands_out_over_changes_without_a_reason(tmp_path: Path) -> None:
    """250 rounds (about 100 s of the demo) through the bundled rules, offline."""
    start = datetime.now(UTC)
    events = tmp_path / "demo.ndjson"
    events.write_text("".join(
        json.dumps(event) + "\n"
        for n in range(250) for event in demo_round(start + timedelta(seconds=0.4 * n), n)))
    matches = run_cli("rules", "test", str(REPO / "src/auditfed/rules"), "--events", str(events), "--json",
                      check=True).stdout.splitlines()
    by_title = Counter(json.loads(line)["rule_title"] for line in matches)
    story = ["Failed Logins Followed by a Successful Login",
             "Privilege Grant Followed by a Bulk Export by the Grantee"]
    assert all(by_title[title] >= 1 for title in story), by_title
    assert 1 <= by_title["Change Without a Reason"] <= 5, by_title  # one in 50 rounds, not most of them
