"""Issue #18: ``auditfed --version``, and a start-up that loads no server stack.

The guard is what ``--help`` imports, not how long it takes (timings flake on a shared
machine; bench/bench_cli.py measures those).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.metadata import version

import pytest
from support.server import run_cli

#: Top-level packages of the server stack that no command's start needs.
SERVER_STACK = {"fastapi", "starlette", "uvicorn", "psycopg", "psycopg_pool", "sigma", "cryptography",
                "httpx", "pydantic", "pydantic_settings", "joserfc", "pyparsing"}

#: Every top-level command and group (DESIGN.md: never renamed).
COMMANDS = ["collect", "init", "serve", "send", "verify", "retention", "checkpoint", "search", "trace",
            "timeline", "who-accessed", "who-changed", "enforcement", "unjustified-changes", "status",
            "token", "proof", "rules", "alerts", "evidence", "node", "federation"]


def _loaded_by(code: str) -> set[str]:
    probe = f"import json, sys\n{code}\nprint(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}})))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                         env={**os.environ, "COLUMNS": "200"})
    return set(json.loads(out.stdout.splitlines()[-1]))


def test_version_prints_the_package_version() -> None:
    result = run_cli("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"auditfed {version('auditfed')}"


def test_importing_the_cli_loads_no_server_stack() -> None:
    assert _loaded_by("import auditfed.cli.main") & SERVER_STACK == set()


def test_help_and_version_load_no_server_stack() -> None:
    for argv in (["--help"], ["--version"]):
        code = ("from typer.testing import CliRunner\nfrom auditfed.cli.main import app\n"
                f"assert CliRunner().invoke(app, {argv!r}).exit_code == 0")
        assert _loaded_by(code) & SERVER_STACK == set(), argv


@pytest.mark.parametrize("command", ["send", "verify", "search", "token"])
def test_a_command_start_loads_none_of_the_server_itself(command: str) -> None:
    # typer 0.29 coerces parameters with pydantic, so that much may load; the server,
    # the HTTP client, the stores and the detection engine may not.
    code = ("from typer.testing import CliRunner\nfrom auditfed.cli.main import app\n"
            f"assert CliRunner().invoke(app, [{command!r}, '--help']).exit_code == 0")
    assert _loaded_by(code) & (SERVER_STACK - {"pydantic", "pydantic_core"}) == set()


def test_help_still_lists_every_command() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    for name in COMMANDS:
        assert f" {name} " in result.stdout, name
    assert "--version" in result.stdout
