"""The ledger's invariants on real SQLite and real PostgreSQL: claims, records, finalization, recovery."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select, update

from imgbatch import ledger
from imgbatch import statuses as st
from imgbatch.csvfile import ProductRow
from imgbatch.db import Database, upgrade
from imgbatch.models import Image, Request, utcnow
from support.databases import add_request, postgres_database, sqlite_url


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    if request.param == "sqlite":
        url = sqlite_url(tmp_path)
        upgrade(url)
        yield Database(url)
    else:
        with postgres_database() as url:
            upgrade(url)
            yield Database(url)


def products(n: int, urls_per_row: int = 2) -> list[ProductRow]:
    return [
        ProductRow(
            row=i + 2,
            serial_number=i + 1,
            product_name=f"Product {i + 1}",
            urls=tuple(f"https://img.example/{i}/{j}.jpg" for j in range(urls_per_row)),
        )
        for i in range(n)
    ]


def new_request(db: Database, n: int = 2, urls_per_row: int = 2) -> tuple[str, list[int]]:
    request_id = f"req{time.monotonic_ns()}"
    return request_id, add_request(db, products(n, urls_per_row), request_id)


def finish(db: Database, image_id: int, ok: bool = True) -> ledger.Recorded:
    claimed = ledger.claim_image(db, image_id, lease_seconds=60)
    assert claimed is not None
    if ok:
        recorded = ledger.record_done(
            db,
            claimed,
            output_key=f"k/{image_id}.jpg",
            output_url=f"http://x/files/k/{image_id}.jpg",
            output_format="jpeg",
            bytes_in=100,
            bytes_out=50,
            width=10,
            height=10,
            kept_original=False,
        )
    else:
        recorded = ledger.record_failed(db, claimed, "not_found", "HTTP 404")
    assert recorded.ours
    return recorded


def test_create_request_keeps_input_order_and_counts(db: Database) -> None:
    request_id, ids = new_request(db, n=3, urls_per_row=2)
    assert len(ids) == 6 and len(set(ids)) == 6
    claimed = ledger.claim_image(db, ids[3], 60)
    assert claimed is not None
    assert (claimed.serial_number, claimed.position, claimed.product_position) == (2, 1, 1)
    assert claimed.input_url == "https://img.example/1/1.jpg"
    with db.session() as session:
        request = session.get(Request, request_id)
        assert request is not None
        assert (request.product_count, request.image_count, request.status) == (3, 6, st.PROCESSING)


def test_ten_thousand_rows_are_written_quickly(db: Database) -> None:
    started = time.perf_counter()
    _, ids = new_request(db, n=10_000, urls_per_row=2)
    elapsed = time.perf_counter() - started
    assert len(ids) == 20_000
    assert elapsed < 10, f"bulk insert took {elapsed:.1f}s"  # a sanity bound; the bench measures


def test_a_claim_is_exclusive_until_its_lease_expires(db: Database) -> None:
    _, ids = new_request(db, n=1, urls_per_row=1)
    first = ledger.claim_image(db, ids[0], lease_seconds=60)
    assert first is not None and first.attempt == 1
    assert ledger.claim_image(db, ids[0], lease_seconds=60) is None
    with db.session() as session:  # the first worker died: its lease runs out
        session.execute(
            update(Image)
            .where(Image.id == ids[0])
            .values(lease_until=utcnow() - timedelta(seconds=1))
        )
    second = ledger.claim_image(db, ids[0], lease_seconds=60)
    assert second is not None and second.attempt == 2
    # The first worker comes back late: its result is not recorded over the new claim.
    assert not ledger.record_failed(db, first, "timeout", "late").ours
    recorded = ledger.record_failed(db, second, "not_found", "gone")
    assert recorded.ours and recorded.maybe_last
    assert ledger.claim_image(db, ids[0], lease_seconds=60) is None  # final images stay final


def test_finalize_waits_for_every_image_and_derives_the_status(db: Database) -> None:
    request_id, ids = new_request(db, n=2, urls_per_row=1)
    assert not finish(db, ids[0], ok=True).maybe_last
    assert ledger.finalize_request(db, request_id) is None
    assert finish(db, ids[1], ok=False).maybe_last
    assert ledger.finalize_request(db, request_id) == st.COMPLETED_WITH_ERRORS
    assert ledger.finalize_request(db, request_id) is None  # only once

    all_ok, ok_ids = new_request(db, n=1, urls_per_row=2)
    for image_id in ok_ids:
        finish(db, image_id)
    assert ledger.finalize_request(db, all_ok) == st.COMPLETED

    all_bad, bad_ids = new_request(db, n=1, urls_per_row=2)
    for image_id in bad_ids:
        finish(db, image_id, ok=False)
    assert ledger.finalize_request(db, all_bad) == st.FAILED
    with db.session() as session:
        request = session.get(Request, all_bad)
        assert request is not None and request.completed_at is not None


def test_concurrent_finalizers_run_the_hook_exactly_once(db: Database) -> None:
    for _round in range(5):
        request_id, ids = new_request(db, n=1, urls_per_row=2)
        for image_id in ids:
            finish(db, image_id)
        calls: list[str] = []
        barrier = threading.Barrier(8)

        def finalizer(barrier: threading.Barrier, request_id: str, calls: list[str]) -> None:
            barrier.wait()
            ledger.finalize_request(db, request_id, on_finalized=lambda _s, r: calls.append(r.id))

        threads = [
            threading.Thread(target=finalizer, args=(barrier, request_id, calls)) for _ in range(8)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert calls == [request_id]


def test_sweeper_queries_find_lost_work(db: Database) -> None:
    request_id, ids = new_request(db, n=1, urls_per_row=3)
    stuck = ledger.claim_image(db, ids[0], lease_seconds=60)
    assert stuck is not None
    with db.session() as session:
        session.execute(
            update(Image)
            .where(Image.id == ids[0])
            .values(lease_until=utcnow() - timedelta(seconds=1))
        )
        session.execute(
            update(Image)
            .where(Image.id.in_(ids[1:]))
            .values(enqueued_at=utcnow() - timedelta(minutes=10))
        )
    assert ledger.requeue_expired_leases(db, max_attempts=5) == [ids[0]]
    assert ledger.requeue_expired_leases(db, max_attempts=5) == []
    stale = ledger.requeue_stale_pending(db, utcnow() - timedelta(minutes=5))
    assert sorted(stale) == sorted(ids[1:])
    assert ledger.requeue_stale_pending(db, utcnow() - timedelta(minutes=5)) == []  # re-stamped
    assert ledger.unfinalized_request_ids(db).count(request_id) == 0


def test_an_image_that_keeps_killing_workers_is_failed(db: Database) -> None:
    request_id, ids = new_request(db, n=1, urls_per_row=1)
    for _ in range(3):
        assert ledger.claim_image(db, ids[0], 60) is not None
        with db.session() as session:
            session.execute(
                update(Image)
                .where(Image.id == ids[0])
                .values(lease_until=utcnow() - timedelta(seconds=1))
            )
    assert ledger.requeue_expired_leases(db, max_attempts=3) == []
    with db.session() as session:
        image = session.get(Image, ids[0])
        assert image is not None and (image.status, image.error_code) == (st.FAILED, "internal")
    assert ledger.unfinalized_request_ids(db) == [request_id]
    assert ledger.finalize_request(db, request_id) == st.FAILED


def test_progress_counts(db: Database) -> None:
    request_id, ids = new_request(db, n=2, urls_per_row=2)
    finish(db, ids[0])
    finish(db, ids[1], ok=False)
    ledger.claim_image(db, ids[2], 60)
    with db.session() as session:
        counts = ledger.image_counts(session, request_id)
        total = session.scalar(
            select(func.count()).select_from(Image).where(Image.request_id == request_id)
        )
    progress = st.progress_from_counts(counts)
    assert (progress.total, progress.succeeded, progress.failed, progress.pending) == (4, 1, 1, 2)
    assert total == 4 and progress.percent == 50.0
