"""Run every benchmark: ``python -m bench [NAME ...]`` (or ``make bench``).

Each prints one JSON document; this runner prints them as one JSON array. Every
figure is compared against a baseline measured in the same run, because the machine
is shared and noisy: read the ratios.
"""

from __future__ import annotations

import importlib
import json
import sys

BENCHMARKS = {
    "ingest": "bench.bench_ingest",
    "log": "bench.bench_log",
    "identity": "bench.bench_identity_ingest",
    "postgres": "bench.bench_postgres",
    "federation": "bench.bench_federation",
    "alerts": "bench.bench_alerts",
}


def main(names: list[str]) -> None:
    results = []
    for name in names or list(BENCHMARKS):
        module = importlib.import_module(BENCHMARKS[name])
        results.append(module.run())
        print(json.dumps(results[-1]), file=sys.stderr)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])
