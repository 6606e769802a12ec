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
from imgbatch.catalogue import ProductRow
from imgbatch.ledger import Database, Image, Request, upgrade, utcnow
from imgbatch.ledger import statuses as st
from support.databases import add_request, expire_lease, postgres_database, sqlite_url


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


def claim(db: Database, image_id: int, lease_seconds: float = 60) -> ledger.ClaimedImage | None:
    claimed = ledger.claim_images(db, [image_id], lease_seconds)
    return claimed[0] if claimed else None


def done(image_id: int) -> ledger.ImageResult:
    return ledger.ImageResult(
        status=st.DONE,
        output_key=f"k/{image_id}.jpg",
        output_url=f"http://x/files/k/{image_id}.jpg",
        output_format="jpeg",
        bytes_in=100,
        bytes_out=50,
        width=10,
        height=10,
        kept_original=False,
    )


def record(
    db: Database, claimed: ledger.ClaimedImage, result: ledger.ImageResult
) -> ledger.Recorded:
    (recorded,) = ledger.record_results(db, [(claimed, result)])
    return recorded


def finish(db: Database, image_id: int, ok: bool = True) -> ledger.Recorded:
    claimed = claim(db, image_id)
    assert claimed is not None
    result = done(image_id) if ok else ledger.ImageResult.failed("not_found", "HTTP 404")
    recorded = record(db, claimed, result)
    assert recorded.ours
    return recorded


def test_create_request_keeps_input_order_and_counts(db: Database) -> None:
    request_id, ids = new_request(db, n=3, urls_per_row=2)
    assert len(ids) == 6 and len(set(ids)) == 6
    claimed = claim(db, ids[3])
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
    first = claim(db, ids[0])
    assert first is not None and first.attempt == 1
    assert claim(db, ids[0]) is None
    expire_lease(db, ids[0])  # the first worker died: its lease runs out
    second = claim(db, ids[0])
    assert second is not None and second.attempt == 2
    # The first worker comes back late: its result is not recorded over the new claim.
    assert not record(db, first, ledger.ImageResult.failed("timeout", "late")).ours
    recorded = record(db, second, ledger.ImageResult.failed("not_found", "gone"))
    assert recorded.ours and recorded.maybe_last
    assert claim(db, ids[0]) is None  # final images stay final


def test_a_job_claims_its_free_images_in_order_in_one_call(db: Database) -> None:
    first_request, first_ids = new_request(db, n=2, urls_per_row=2)
    _, other_ids = new_request(db, n=1, urls_per_row=1)
    finish(db, first_ids[1])  # done already: a replayed job must not take it again
    assert claim(db, first_ids[2]) is not None  # leased by another worker
    wanted = [other_ids[0], first_ids[3], first_ids[2], first_ids[1], first_ids[0]]
    claimed = ledger.claim_images(db, wanted, lease_seconds=60)
    assert [c.id for c in claimed] == [other_ids[0], first_ids[3], first_ids[0]]
    assert [c.attempt for c in claimed] == [1, 1, 1]
    assert [(c.serial_number, c.position) for c in claimed] == [(1, 0), (2, 1), (1, 0)]
    assert ledger.claim_images(db, wanted, lease_seconds=60) == []
    assert ledger.claim_images(db, [], lease_seconds=60) == []
    with db.session() as session:
        request = session.get(Request, first_request)
        assert request is not None and request.status == st.PROCESSING


def test_a_job_records_its_results_in_one_call(db: Database) -> None:
    request_a, ids_a = new_request(db, n=1, urls_per_row=2)
    request_b, ids_b = new_request(db, n=1, urls_per_row=2)
    finish(db, ids_b[0])
    claimed = ledger.claim_images(db, [ids_a[0], ids_b[1], ids_a[1]], lease_seconds=60)
    lost = claimed[2]
    expire_lease(db, lost.id)
    assert claim(db, lost.id) is not None  # another worker took ids_a[1] over
    recorded = ledger.record_results(
        db,
        [
            (claimed[0], done(claimed[0].id)),
            (claimed[1], ledger.ImageResult.failed("not_found", "HTTP 404")),
            (lost, done(lost.id)),
        ],
    )
    assert recorded == [
        ledger.Recorded(ours=True, maybe_last=False),  # request a still has ids_a[1]
        ledger.Recorded(ours=True, maybe_last=True),  # request b is finished
        ledger.Recorded(ours=False, maybe_last=False),
    ]
    assert ledger.finalize_request(db, request_b) == st.COMPLETED_WITH_ERRORS
    assert ledger.finalize_request(db, request_a) is None


def test_renewing_keeps_only_the_claims_still_ours(db: Database) -> None:
    _, ids = new_request(db, n=1, urls_per_row=3)
    claimed = ledger.claim_images(db, ids, lease_seconds=60)
    expire_lease(db, ids[1])
    other = claim(db, ids[1])  # taken over after our lease ran out
    assert other is not None and record(db, other, done(ids[1])).ours
    kept = ledger.renew_leases(db, claimed, lease_seconds=600)
    assert [c.id for c in kept] == [ids[0], ids[2]]
    with db.session() as session:
        leases = session.execute(
            select(Image.lease_until).where(Image.id.in_([ids[0], ids[2]]))
        ).scalars()
        assert all(lease > utcnow() + timedelta(seconds=300) for lease in leases)


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
    stuck = claim(db, ids[0])
    assert stuck is not None
    expire_lease(db, ids[0])
    with db.session() as session:
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
        assert claim(db, ids[0]) is not None
        expire_lease(db, ids[0])
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
    claim(db, ids[2])
    with db.session() as session:
        counts = ledger.image_counts(session, request_id)
        total = session.scalar(
            select(func.count()).select_from(Image).where(Image.request_id == request_id)
        )
    progress = st.progress_from_counts(counts)
    assert (progress.total, progress.succeeded, progress.failed, progress.pending) == (4, 1, 1, 2)
    assert total == 4 and progress.percent == 50.0


def test_options_reach_the_worker_and_savings_sum_done_images(db: Database) -> None:
    request_id = f"req{time.monotonic_ns()}"
    ids = ledger.create_request(
        db,
        request_id=request_id,
        products=products(1, 3),
        quality="auto",
        output_format="webp",
        webhook_url=None,
        owner=None,
        max_width=800,
        max_height=None,
    )
    claimed = ledger.claim_images(db, ids, 60)
    assert [(c.quality, c.output_format, c.max_width, c.max_height) for c in claimed] == [
        ("auto", "webp", 800, None)
    ] * 3
    results = [
        ledger.ImageResult(status=st.DONE, bytes_in=1000, bytes_out=400, quality=61),
        ledger.ImageResult(status=st.DONE, bytes_in=500, bytes_out=500, kept_original=True),
        ledger.ImageResult.failed("not_found", "HTTP 404"),
    ]
    ledger.record_results(db, list(zip(claimed, results, strict=True)))
    with db.session() as session:
        assert ledger.image_savings(session, request_id) == st.Savings(2, 1500, 900)
        qualities = session.execute(
            select(Image.quality).where(Image.request_id == request_id).order_by(Image.id)
        ).scalars()
        assert list(qualities) == [61, None, None]
        request = session.get(Request, request_id)
        assert request is not None and request.auto_quality and request.max_width == 800
