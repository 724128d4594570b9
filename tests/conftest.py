"""Fixtures shared by the whole suite: real auditfed servers on loopback, on each store.

``server`` and ``fresh_server`` are parametrised over the two stores: every test
that uses them runs once on SQLite (a file in the data dir) and once on PostgreSQL
(a fresh database in one throwaway PostgreSQL server per session, started from the
Debian package with :mod:`support.postgres`). Tests that build servers themselves
take the ``store`` fixture (``None`` for SQLite, else a fresh database's URL).

Outside CI a machine without PostgreSQL (and no root to install it) skips the
PostgreSQL half; under ``CI=true`` that is a failure. ``AUDITFED_TEST_STORES=sqlite``
(or ``postgres``) runs one half only.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support.postgres import PostgresServer, PostgresUnavailable, postgres_server
from support.server import Server
from support.stores import STORE_PARAMS, in_ci, new_database

__all__ = ["STORE_PARAMS", "new_database"]

@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One throwaway PostgreSQL for the session (fsync off: tests need no power-loss safety)."""
    try:
        with postgres_server({"max_connections": "400", "shared_buffers": "64MB"}) as pg:
            yield pg
    except PostgresUnavailable as exc:
        if in_ci():
            pytest.fail(f"PostgreSQL is required in CI: {exc}")
        pytest.skip(f"PostgreSQL unavailable: {exc}")


def _store_url(request: pytest.FixtureRequest, kind: str) -> str | None:
    if kind == "sqlite":
        return None
    return new_database(request.getfixturevalue("postgres"))


@pytest.fixture(params=STORE_PARAMS)
def store(request: pytest.FixtureRequest) -> str | None:
    """The store for a server a test builds itself: ``None`` (SQLite) or a fresh database."""
    return _store_url(request, request.param)


@pytest.fixture(scope="module", params=STORE_PARAMS)
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server shared by the tests of one module."""
    srv = Server(tmp_path_factory.mktemp("srv") / "data", store=_store_url(request, request.param)).start()
    yield srv
    srv.stop()


@pytest.fixture(params=STORE_PARAMS)
def fresh_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    """A server of one's own, for tests that count, break or stop it."""
    srv = Server(tmp_path / "data", store=_store_url(request, request.param)).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def admin(server: Server) -> str:
    return server.admin_token


@pytest.fixture(scope="module")
def source_token(server: Server) -> str:
    return server.token("source", service="billing-api", environment="prod-eu")
