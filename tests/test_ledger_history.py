"""History pages on real SQLite and PostgreSQL: order, filters, cursors, and speed at 100,000.

Keyset pages must not shift when requests are created between two pages, must never
repeat or skip a request (also when several share a creation time), and must stay one
index range scan however many requests the ledger holds.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import insert, text, update

from imgbatch import jobs, ledger
from imgbatch.context import Context
from imgbatch.ledger import Request, utcnow
from imgbatch.ledger import statuses as st
from support.lifecycle import failed, ledger_context, new_request, settle


@pytest.fixture(params=["sqlite", "postgresql"])
def ctx(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Context]:
    with ledger_context(request.param, tmp_path) as context:
        yield context


def ids(page: ledger.Page) -> list[str]:
    return [item.request_id for item in page.requests]


def walk(ctx: Context, limit: int, **filters: object) -> list[str]:
    """Every request, following cursors page by page."""
    seen: list[str] = []
    cursor = None
    while True:
        page = ledger.list_requests(ctx.db, limit=limit, cursor=cursor, **filters)  # type: ignore[arg-type]
        seen += ids(page)
        if page.next_cursor is None:
            return seen
        cursor = page.next_cursor


def test_pages_are_newest_first_and_stable_under_inserts(ctx: Context) -> None:
    created = [new_request(ctx, 1)[0] for _ in range(5)]
    first = ledger.list_requests(ctx.db, owner=None, limit=2)
    assert ids(first) == created[::-1][:2] and first.next_cursor
    newer = [new_request(ctx, 1)[0] for _ in range(3)]  # created between two pages
    second = ledger.list_requests(ctx.db, owner=None, limit=2, cursor=first.next_cursor)
    assert ids(second) == created[::-1][2:4]
    third = ledger.list_requests(ctx.db, owner=None, limit=2, cursor=second.next_cursor)
    assert ids(third) == created[:1] and third.next_cursor is None
    assert ids(ledger.list_requests(ctx.db, owner=None, limit=3)) == newer[::-1]


def test_equal_creation_times_are_never_repeated_or_skipped(ctx: Context) -> None:
    created = [new_request(ctx, 1)[0] for _ in range(7)]
    same = utcnow() - timedelta(hours=1)
    with ctx.db.session() as session:  # one clock tick for all: the id breaks the tie
        session.execute(update(Request).values(created_at=same))
    for limit in (1, 2, 3, 7, 200):
        assert walk(ctx, limit, owner=None) == sorted(created, reverse=True)


def test_filters_owner_status_and_deleted(ctx: Context) -> None:
    mine, ids_mine = new_request(ctx, 2)
    settle(ctx, ids_mine[:1])
    settle(ctx, ids_mine[1:], failed("upstream"))
    theirs, _ = new_request(ctx, 1)
    gone, ids_gone = new_request(ctx, 1)
    settle(ctx, ids_gone)
    with ctx.db.session() as session:
        session.execute(update(Request).where(Request.id == mine).values(owner="a" * 64))
        session.execute(update(Request).where(Request.id == theirs).values(owner="b" * 64))
    assert ledger.mark_deleted(ctx.db, gone) == "marked"  # being deleted: already invisible
    assert walk(ctx, 10, owner=None) == [theirs, mine]
    assert walk(ctx, 10, owner="a" * 64) == [mine]
    assert walk(ctx, 10, owner="c" * 64) == []
    assert walk(ctx, 10, owner=None, status=st.COMPLETED_WITH_ERRORS) == [mine]
    assert walk(ctx, 10, owner=None, status=st.PENDING) == [theirs]
    assert walk(ctx, 10, owner="b" * 64, status=st.COMPLETED_WITH_ERRORS) == []


def test_items_carry_progress_and_savings_from_the_summary_or_live(ctx: Context) -> None:
    request_id, image_ids = new_request(ctx, 4)
    settle(ctx, image_ids[:2])  # 2 done (10 bytes in, 5 out each), 2 pending
    (running,) = ledger.list_requests(ctx.db, owner=None).requests
    assert (
        running.progress.as_dict() == st.progress_from_counts({"done": 2, "pending": 2}).as_dict()
    )
    assert running.savings == st.Savings(2, 20, 10)
    settle(ctx, image_ids[2:3], failed("timeout"))
    jobs.cancel(ctx, request_id)
    (final,) = ledger.list_requests(ctx.db, owner=None).requests
    assert final.status == st.CANCELLED and final.completed_at is not None
    assert final.progress.as_dict() == {
        "total": 4,
        "succeeded": 2,
        "failed": 1,
        "pending": 0,
        "cancelled": 1,
        "percent": 100.0,
    }
    assert final.savings.as_dict()["saved_percent"] == 50.0
    assert (final.products, final.images, final.filename) == (4, 4, None)
    with ctx.db.session() as session:  # the summary written at finalization
        row = session.get(Request, request_id)
        assert row is not None
        summary = (row.done_images, row.failed_images, row.cancelled_images, row.bytes_in)
        assert summary == (2, 1, 1, 20)
    jobs.retry(ctx, request_id)  # runs again: the summary goes, counts are live again
    (again,) = ledger.list_requests(ctx.db, owner=None).requests
    assert again.status == st.PROCESSING and again.progress.pending == 2
    assert again.savings == st.Savings(2, 20, 10)


@pytest.mark.parametrize(
    "cursor", ["", "x", "12", ".abc", "12.", "12.a-b", "1" * 19 + ".abc", "-5.abc", "12.ab c"]
)
def test_malformed_cursors_are_refused(cursor: str) -> None:
    with pytest.raises(ValueError):
        ledger.decode_cursor(cursor)


def test_cursor_round_trip_and_any_well_formed_cursor_is_a_position(ctx: Context) -> None:
    now = utcnow()
    assert ledger.decode_cursor(ledger.encode_cursor(now, "abc123")) == (now, "abc123")
    request_id, _ = new_request(ctx, 1)
    far = "9" * 18 + ".zzz"  # past the calendar's end: older than the far future is all
    assert ids(ledger.list_requests(ctx.db, owner=None, cursor=far)) == [request_id]
    assert ids(ledger.list_requests(ctx.db, owner=None, cursor="0.a")) == []


HUNDRED_THOUSAND = 100_000


def assert_index_only_plan(ctx: Context, filters: dict[str, object]) -> None:
    """The page is read in index order: no scan of the table, no sort of its rows."""
    query = ledger.history.page_query(
        owner=filters.get("owner"),  # type: ignore[arg-type]
        status=filters.get("status"),  # type: ignore[arg-type]
        cursor=filters.get("cursor"),  # type: ignore[arg-type]
        limit=200,
    )
    with ctx.db.connection() as conn:
        sql = str(query.compile(conn, compile_kwargs={"literal_binds": True}))
        if conn.dialect.name == "sqlite":
            plan = " / ".join(row[3] for row in conn.execute(text("EXPLAIN QUERY PLAN " + sql)))
            assert "USING INDEX ix_requests_" in plan and "TEMP B-TREE" not in plan, plan
        else:
            plan = " / ".join(row[0] for row in conn.execute(text("EXPLAIN " + sql)))
            assert "Index Scan" in plan and "Sort" not in plan and "Seq Scan" not in plan, plan


def test_listing_stays_fast_with_a_hundred_thousand_requests(ctx: Context) -> None:
    """One index range scan per page: no count, no sort of the table, no OFFSET walk."""
    start = utcnow() - timedelta(days=30)
    owners = ["a" * 64, "b" * 64, None]
    rows = [
        {
            "id": uuid.UUID(int=i).hex,
            "status": st.FAILED if i % 1000 == 0 else st.COMPLETED,
            "owner": owners[i % 3],
            "quality": 50,
            "output_format": "keep",
            "product_count": 1,
            "image_count": 1,
            "created_at": start + timedelta(seconds=i),
            "updated_at": start,
            "completed_at": start,
            "done_images": 1,
            "failed_images": 0,
            "cancelled_images": 0,
            "bytes_in": 100,
            "bytes_out": 50,
        }
        for i in range(HUNDRED_THOUSAND)
    ]
    with ctx.db.connection() as conn:
        for chunk in range(0, len(rows), 10_000):
            conn.execute(insert(Request.__table__), rows[chunk : chunk + 10_000])
        if conn.dialect.name == "postgresql":
            conn.execute(text("ANALYZE requests"))
    middle = ledger.encode_cursor(start + timedelta(seconds=50_000), uuid.UUID(int=50_000).hex)
    cases = {
        "first page, open": {"owner": None},
        "first page, one key": {"owner": "a" * 64},
        "deep page": {"owner": None, "cursor": middle},
        "rare status, one key": {"owner": "b" * 64, "status": st.FAILED},
        "rare status, deep": {"owner": None, "status": st.FAILED, "cursor": middle},
    }
    timings = {}
    for name, filters in cases.items():
        ledger.list_requests(ctx.db, limit=200, **filters)  # type: ignore[arg-type]
        started = time.perf_counter()
        page = ledger.list_requests(ctx.db, limit=200, **filters)  # type: ignore[arg-type]
        timings[name] = time.perf_counter() - started
        assert page.requests, name
        assert_index_only_plan(ctx, filters)
    print({name: f"{seconds * 1000:.1f} ms" for name, seconds in timings.items()})
    # ~5-20 ms each on this machine; a scan of 100,000 rows would take far longer.
    assert max(timings.values()) < 0.25, timings
    page = ledger.list_requests(ctx.db, owner="b" * 64, status=st.FAILED, limit=200)
    assert len(page.requests) == 33 and page.next_cursor is None  # i % 3000 == 2000
