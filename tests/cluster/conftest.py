"""Several auditfed nodes on one throwaway PostgreSQL (its own, since tests restart it)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cluster_helpers import Cluster, fresh_database
from support.postgres import PostgresServer, PostgresUnavailable, postgres_server


@pytest.fixture(scope="module")
def cluster_pg() -> Iterator[PostgresServer]:
    try:
        with postgres_server({"max_connections": "200"}) as pg:
            yield pg
    except PostgresUnavailable as exc:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"PostgreSQL is required in CI: {exc}")
        pytest.skip(f"PostgreSQL unavailable: {exc}")


@pytest.fixture
def make_cluster(cluster_pg: PostgresServer, tmp_path: Path) -> Iterator:
    made: list[Cluster] = []

    def make(count: int, *extra: str, **options: Any) -> Cluster:
        cluster = Cluster(tmp_path / f"c{len(made)}", fresh_database(cluster_pg), count, *extra, **options)
        made.append(cluster)
        return cluster

    yield make
    for cluster in made:
        cluster.stop()
