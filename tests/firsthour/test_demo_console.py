"""The demo as a newcomer meets it (issue #18, point 5): `auditfed serve --demo` on a
fresh data dir, in a real subprocess. Its console ends with the admin token (also
in `<data dir>/admin.token`, mode 0600), then stays quiet but for one summary line
every 10 s; a second server on the same port says so at once and how to fix it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from support.server import AUDITFED, free_port, run_cli

SUMMARY = re.compile(r"auditfed\.demo demo: \d+ events so far; alerts by rule: ")
#: A summary that names at least one rule: "<count> <title> (<level>)".
SUMMARY_WITH_RULES = re.compile(SUMMARY.pattern + r"\d+ [^,]+ \((informational|low|medium|high|critical)\)")


class Demo:
    """`auditfed serve --demo` with stdout and stderr in one file, in order."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.output = data_dir.parent / "demo-console.txt"
        with self.output.open("wb") as console:
            self.process = subprocess.Popen(
                [*AUDITFED, "serve", "--demo", "--data", str(data_dir), "--log-format", "text",
                 "--listen", f"127.0.0.1:{self.port}"],
                stdout=console, stderr=subprocess.STDOUT,
                env={**os.environ, "NO_COLOR": "1", "COLUMNS": "200"},
                start_new_session=True,  # a process group of its own, as in a terminal
            )

    def lines(self) -> list[str]:
        return self.output.read_text().splitlines()

    def wait_for(self, pattern: re.Pattern[str], timeout: float = 90) -> list[str]:
        """The console's lines once one matches ``pattern`` (bounded by ``timeout``)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            lines = self.lines()
            if any(pattern.search(line) for line in lines):
                return lines
            assert self.process.poll() is None, "\n".join(lines[-40:])
            time.sleep(0.5)
        raise AssertionError(f"no line matching {pattern.pattern}:\n" + "\n".join(self.lines()[-40:]))

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop with ``sig`` sent to the whole process group (SIGINT: a terminal's Ctrl-C)."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, sig)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    running = Demo(tmp_path_factory.mktemp("demo") / "auditfed-data")
    try:
        # Quiet for at least 12 s, with a summary naming a rule (the first incident comes ~4 s in).
        running.wait_for(SUMMARY_WITH_RULES)
        yield running
    finally:
        running.stop()


def test_the_admin_token_is_in_a_private_file_and_works(demo: Demo) -> None:
    token_file = demo.data_dir / "admin.token"
    assert token_file.stat().st_mode & 0o777 == 0o600
    token = token_file.read_text().strip()
    assert token.startswith("afd_")
    response = httpx.get(f"{demo.url}/v1/alerts", headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert response.status_code == 200, response.text
    assert httpx.get(f"{demo.url}/v1/alerts", timeout=30).status_code == 401


def test_the_token_is_the_last_line_before_the_summaries(demo: Demo) -> None:
    lines = [line for line in demo.lines() if line.strip()]
    token = (demo.data_dir / "admin.token").read_text().strip()
    first_summary = next(i for i, line in enumerate(lines) if SUMMARY.search(line))
    assert lines[first_summary - 1] == token
    assert "admin.token" in lines[first_summary - 2]
    assert lines[first_summary - 3] == f"auditfed serving on http://127.0.0.1:{demo.port}"


def test_the_console_shows_summaries_naming_rules_and_no_line_per_alert(demo: Demo) -> None:
    lines = demo.lines()
    assert not [line for line in lines if "alert raised" in line]
    named = [line for line in lines if SUMMARY_WITH_RULES.search(line)]
    assert named, "\n".join(lines)
    # The alerts exist: the summary counts what the server raised.
    token = (demo.data_dir / "admin.token").read_text().strip()
    listed = httpx.get(f"{demo.url}/v1/alerts", headers={"Authorization": f"Bearer {token}"}, timeout=30)
    titles = {alert["title"] for alert in listed.json()["alerts"]}
    assert any(f" {title} (" in named[-1] for title in titles), (titles, named[-1])


def test_a_port_in_use_fails_at_once_naming_the_port_and_the_fix(demo: Demo, tmp_path: Path) -> None:
    data = tmp_path / "second"
    result = run_cli("serve", "--data", str(data), "--listen", f"127.0.0.1:{demo.port}", timeout=60)
    assert result.returncode == 1
    assert result.stdout == ""
    errors = result.stderr.strip().splitlines()
    assert len(errors) == 1, result.stderr
    assert f"127.0.0.1:{demo.port}" in errors[0] and "already in use" in errors[0]
    assert "make demo PORT=" in errors[0] and "--listen" in errors[0]
    assert "serving on" not in result.stderr and "Traceback" not in result.stderr
    assert not data.exists()  # nothing initialised for a server that cannot start


def test_a_restarted_demo_shows_the_kept_token_last_and_ctrl_c_ends_it_cleanly(tmp_path: Path) -> None:
    data = tmp_path / "auditfed-data"
    token = run_cli("init", "--data", str(data), check=True).stdout.strip()
    restarted = Demo(data)
    try:
        lines = [line for line in restarted.wait_for(re.compile(re.escape(token)), timeout=60) if line.strip()]
        serving = lines.index(f"auditfed serving on http://127.0.0.1:{restarted.port}")
        assert lines[serving + 2] == token and "admin.token" in lines[serving + 1]
        restarted.stop(signal.SIGINT)
        assert restarted.process.returncode == 0
        assert "Traceback" not in restarted.output.read_text()
    finally:
        restarted.stop()
