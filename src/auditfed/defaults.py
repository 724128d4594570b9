"""Defaults shared by the server and the CLI, with no imports.

The CLI's option defaults name these, so ``auditfed --help`` can build its help
without importing the server stack (pydantic, httpx, the detection engine): the
modules that own each value re-export it from here.
"""

DEFAULT_PORT = 8400
DEFAULT_URL = f"http://127.0.0.1:{DEFAULT_PORT}"
#: Longest lifetime a token may be given (100 years; more overflowed the date: a 500).
MAX_TOKEN_SECONDS = 100 * 365 * 86400
#: Idle seconds a principal's timeline shows as a gap.
DEFAULT_GAP_SECONDS = 3600.0
