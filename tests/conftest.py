"""Fixtures shared by the whole suite: real auditfed servers on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support.server import Server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server shared by the tests of one module."""
    srv = Server(tmp_path_factory.mktemp("srv") / "data").start()
    yield srv
    srv.stop()


@pytest.fixture
def fresh_server(tmp_path: Path) -> Iterator[Server]:
    """A server of one's own, for tests that count, break or stop it."""
    srv = Server(tmp_path / "data").start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def admin(server: Server) -> str:
    return server.admin_token


@pytest.fixture(scope="module")
def source_token(server: Server) -> str:
    return server.token("source", service="billing-api", environment="prod-eu")
