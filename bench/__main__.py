"""Run every benchmark: ``python -m bench [NAME ...]`` (or ``make bench``).

Each benchmark runs as ``python -m bench.<module>`` in its own process (as it runs
alone, with its defaults) and prints one JSON document; this runner prints them as
one JSON array. Every figure is compared against a baseline measured in the same run,
because the machine is shared and noisy: read the ratios.

``BENCHMARKS`` holds exactly the modules bench/README.md lists
(tests/firsthour/test_cli_bench.py keeps the two in step).
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

BENCHMARKS = {
    "ingest": "bench.bench_ingest",
    "log": "bench.bench_log",
    "identity": "bench.bench_identity_ingest",
    "identity-verify": "bench.bench_identity",
    "postgres": "bench.bench_postgres",
    "federation": "bench.bench_federation",
    "detect": "bench.bench_detect",
    "alerts": "bench.bench_alerts",
    "answers": "bench.bench_answers",
    "sources": "bench.bench_sources",
    "cli": "bench.bench_cli",
}


def run_one(name: str, args: list[str] | None = None) -> Any:
    """One benchmark's JSON document (or, when it fails, its name and exit status)."""
    done = subprocess.run([sys.executable, "-m", BENCHMARKS[name], *(args or [])],
                          stdout=subprocess.PIPE, text=True)
    if done.returncode != 0:
        return {"benchmark": name, "failed": f"exit status {done.returncode} (its stderr is above)"}
    return json.loads(done.stdout)


def main(names: list[str]) -> None:
    unknown = [name for name in names if name not in BENCHMARKS]
    if unknown:
        sys.exit(f"unknown benchmark {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}")
    results = []
    for name in names or list(BENCHMARKS):
        results.append(run_one(name))
        print(json.dumps(results[-1]), file=sys.stderr)
    print(json.dumps(results, indent=2))
    if any("failed" in result for result in results):
        sys.exit(1)


if __name__ == "__main__":
    main(sys.argv[1:])
