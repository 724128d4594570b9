"""Which stores the suite runs on, and fresh PostgreSQL databases (imported by conftest.py;
import from here, not from ``conftest``, which names several files)."""

from __future__ import annotations

import itertools
import os

import pytest

from support.postgres import PostgresServer

STORES = [
    s for s in ("sqlite", "postgres")
    if s in os.environ.get("AUDITFED_TEST_STORES", "sqlite,postgres").split(",")
]
STORE_PARAMS = [pytest.param(s, marks=pytest.mark.postgres) if s == "postgres" else s for s in STORES]

_databases = itertools.count(1)


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def new_database(pg: PostgresServer, prefix: str = "auditfed") -> str:
    """A fresh, empty database on ``pg``; its store URL."""
    import psycopg

    name = f"{prefix}_{os.getpid()}_{next(_databases)}"
    with psycopg.connect(pg.conninfo(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return pg.url(dbname=name)
