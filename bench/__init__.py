"""auditfed benchmarks: each compares against a baseline measured in the same run.

The benchmarks start real servers with the test suite's helpers (tests/support).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
