"""Store pages cut at a byte budget (issue 16, item 2), on every store engine: at least
one event per page however large, never more than the budget otherwise, and paging on
from the last index returns every match exactly once."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from auditfed.store import open_store
from auditfed.store.base import EntryRow, Store
from auditfed.store.filters import Query, Term

SIZES = [100, 5000, 300, 300, 300, 9000, 100, 100, 4000, 100, 200, 7000]
BUDGET = 1000


@pytest.fixture
def filled(store: str | None, tmp_path: Path) -> Iterator[Store]:
    opened = open_store(store or f"sqlite:///{tmp_path / 'log.db'}", fsync=False)
    rows = [EntryRow(b'{"pad":"' + b"p" * (size - 10) + b'"}', bytes(32), "svc", f"evt-{n}",
                     "2026-11-28T00:00:00Z", "a.b", "u", None, None, None, None, "success", n + 1, 0)
            for n, size in enumerate(SIZES)]
    with opened.transaction() as tx:
        tx.append_entries(0, rows)
    with opened.index_transaction() as tx:
        tx.index_entries(0, rows)
    yield opened
    opened.close()


@pytest.mark.parametrize("newest_first", [True, False])
def test_search_pages_hold_at_most_the_budget_and_cover_every_match_once(filled: Store, newest_first: bool) -> None:
    seen: list[int] = []
    cursor = None
    for _ in range(len(SIZES) + 1):
        rows, more = filled.search_within(Query(Term("service", "svc"), newest_first=newest_first, limit=100,
                                                after=cursor), BUDGET)
        assert rows
        assert len(rows) == 1 or sum(len(data) for _, data in rows) <= BUDGET
        seen += [index for index, _ in rows]
        if not more:
            break
        cursor = rows[-1][0]
    assert seen == sorted(range(len(SIZES)), reverse=newest_first)


def test_a_full_count_page_says_more_may_follow(filled: Store) -> None:
    rows, more = filled.search_within(Query(Term("service", "svc"), newest_first=False, limit=2), 10**9)
    assert [index for index, _ in rows] == [0, 1]
    assert more


def test_entry_pages_hold_at_most_the_budget(filled: Store) -> None:
    position = 0
    while position < len(SIZES):
        rows = filled.entries_within(position, len(SIZES), BUDGET)
        assert [index for index, _ in rows] == list(range(position, position + len(rows)))
        assert len(rows) == 1 or sum(len(data) for _, data in rows) <= BUDGET
        position += len(rows)
    assert filled.entries_within(len(SIZES), len(SIZES) + 5, BUDGET) == []
