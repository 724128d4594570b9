"""Fixtures of the source tests: test data paths and a real PostgreSQL 15 with pgaudit."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.postgres import PostgresServer, PostgresUnavailable, postgres_server

DATA = Path(__file__).resolve().parent.parent / "data"

PGAUDIT_SETTINGS = {
    "shared_preload_libraries": "pgaudit",
    "log_destination": "stderr,jsonlog",
    "pgaudit.log": "read,write,ddl,role",
    "pgaudit.log_relation": "on",
    "pgaudit.log_parameter": "off",
}


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA


@pytest.fixture(scope="session")
def pgaudit_server() -> Iterator[PostgresServer]:
    """PostgreSQL 15 + pgaudit, logging stderr (Debian's log_line_prefix) and jsonlog.

    Installed with apt when missing (as root). Skipped only outside CI; under CI=true a
    missing server is a failure.
    """
    try:
        with postgres_server(PGAUDIT_SETTINGS, packages=("postgresql-15-pgaudit",)) as pg:
            yield pg
    except PostgresUnavailable as exc:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"PostgreSQL with pgaudit is required in CI: {exc}")
        pytest.skip(f"PostgreSQL with pgaudit unavailable: {exc}")
