"""CLI start-up time (issue #18): ``auditfed --help`` and each command's start.

Every CLI call pays the start-up, so scripts and progress bars crawl when it is slow.
Measures the wall time of fresh interpreter processes, interleaved round by round so
that load on the shared machine hits every figure alike:

- ``python -c pass`` (baseline: the interpreter alone),
- ``python -c "import typer.rich_utils"`` (baseline: the CLI library and its rich help),
- ``python -m auditfed.cli --help``, ``--version``, ``send --help`` and ``verify --help``.

Reports the median and the spread (p10, p90) of each, the cost of auditfed's own
modules above the typer baseline, and the server-stack modules that ``--help`` loaded
(none is the goal; tests/firsthour/test_cli_startup.py guards it). Goal: ``help_ms``
median <= 300.

    python -m bench.bench_cli [--rounds 15]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

SRC = Path(__file__).resolve().parents[1] / "src"
#: Modules of the server stack that no command's start needs.
HEAVY = ("fastapi", "pydantic", "pydantic_settings", "psycopg", "sigma", "cryptography", "httpx", "uvicorn")

CASES = {
    "pass_ms": ["-c", "pass"],
    "typer_ms": ["-c", "import typer.rich_utils"],
    "help_ms": ["-m", "auditfed.cli", "--help"],
    "version_ms": ["-m", "auditfed.cli", "--version"],
    "send_help_ms": ["-m", "auditfed.cli", "send", "--help"],
    "verify_help_ms": ["-m", "auditfed.cli", "verify", "--help"],
}


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SRC), env.get("PYTHONPATH")]))
    env["COLUMNS"] = "100"  # help layout does not depend on the terminal
    return env


def _time(args: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, *args], env=env, check=True, stdout=subprocess.DEVNULL)
    return (time.perf_counter() - started) * 1000


def heavy_modules_loaded(env: dict[str, str]) -> list[str]:
    """Server-stack modules present after building ``--help`` (in a fresh process)."""
    probe = ("import json, sys\nfrom typer.testing import CliRunner\nfrom auditfed.cli.main import app\n"
             "CliRunner().invoke(app, ['--help'])\n"
             f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & set({list(HEAVY)!r}))))")
    out = subprocess.run([sys.executable, "-c", probe], env=env, check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def run(rounds: int = 15) -> dict[str, Any]:
    env = _env()
    for args in CASES.values():  # warm the file cache and the .pyc files
        _time(args, env)
    samples: dict[str, list[float]] = {name: [] for name in CASES}
    for _ in range(rounds):
        for name, args in CASES.items():
            samples[name].append(_time(args, env))
    result: dict[str, Any] = {"benchmark": "cli", "rounds": rounds}
    for name, values in samples.items():
        deciles = statistics.quantiles(values, n=10)
        result[name] = round(statistics.median(values), 1)
        result[name.removesuffix("_ms") + "_spread_ms"] = [round(deciles[0], 1), round(deciles[-1], 1)]
    result["auditfed_above_typer_ms"] = round(result["help_ms"] - result["typer_ms"], 1)
    result["heavy_modules_loaded_by_help"] = heavy_modules_loaded(env)
    result["goal"] = "help_ms <= 300 (median); no server-stack module loaded by --help"
    result["goal_met"] = result["help_ms"] <= 300 and not result["heavy_modules_loaded_by_help"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15, help="interleaved runs of each case")
    print(json.dumps(run(parser.parse_args().rounds), indent=2))


if __name__ == "__main__":
    main()
