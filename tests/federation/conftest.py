"""Fixtures of the federation tests: a hub and two nodes as real processes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from federation_helpers import Hub, NodeProc


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("federation")


@pytest.fixture(scope="module")
def hub(base: Path) -> Iterator[Hub]:
    h = Hub(base)
    yield h
    h.stop()


@pytest.fixture(scope="module")
def eu(base: Path, hub: Hub) -> Iterator[NodeProc]:
    node = NodeProc(base, "eu-prod", hub, env={"AUDITFED_UPSTREAM_BATCH": "200"})
    yield node
    node.stop()


@pytest.fixture(scope="module")
def us(base: Path, hub: Hub) -> Iterator[NodeProc]:
    node = NodeProc(base, "us-prod", hub, env={"AUDITFED_UPSTREAM_BATCH": "200"})
    yield node
    node.stop()
