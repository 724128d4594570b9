"""Issue #18: ``make bench`` runs every benchmark bench/README.md lists, and the CLI
start-up benchmark runs with one command and prints its figures as JSON."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _runner_modules() -> set[str]:
    code = "import json, bench.__main__ as b; print(json.dumps(sorted(b.BENCHMARKS.values())))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    return set(json.loads(out.stdout))


def test_the_runner_runs_every_benchmark_the_readme_lists() -> None:
    listed = set(re.findall(r"^\| `(bench_\w+)`", (ROOT / "bench" / "README.md").read_text(), re.MULTILINE))
    assert "bench_cli" in listed
    assert _runner_modules() == {f"bench.{name}" for name in listed}
    assert "python -m bench" in (ROOT / "Makefile").read_text()


def test_bench_cli_prints_json_with_its_baselines() -> None:
    out = subprocess.run([sys.executable, "-m", "bench.bench_cli", "--rounds", "2"], cwd=ROOT,
                         capture_output=True, text=True, check=True, timeout=300,
                         env={**os.environ, "COLUMNS": "100"})
    result = json.loads(out.stdout)
    for key in ("pass_ms", "typer_ms", "help_ms", "version_ms", "send_help_ms", "help_spread_ms", "goal_met"):
        assert key in result, key
    assert result["heavy_modules_loaded_by_help"] == []
    assert result["pass_ms"] < result["help_ms"]
