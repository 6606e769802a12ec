"""A request's repeated URL is processed once: the ledger side, on real SQLite and PostgreSQL.

A later position whose URL (normalised) an earlier one names follows it: it is not
returned for enqueueing, never claimed, and takes its source's result in the
transaction that records the source; the sweeper settles the rest (a source failed
outside a record, followers a retry put back while their source stayed done).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from imgbatch import ledger
from imgbatch.catalogue import ProductRow
from imgbatch.fetching import url_key
from imgbatch.ledger import Database, Image, upgrade
from imgbatch.ledger import statuses as st
from support.databases import expire_lease, postgres_database, sqlite_url

A = "https://img.example/a.jpg"


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


def add(db: Database, rows: list[list[str]], request_id: str = "r1") -> list[int]:
    products = [ProductRow(i + 2, i + 1, f"P{i + 1}", tuple(urls)) for i, urls in enumerate(rows)]
    keys = [url_key(url) for p in products for url in p.urls]
    return ledger.create_request(
        db,
        request_id=request_id,
        products=products,
        quality=50,
        output_format="keep",
        webhook_url=None,
        owner=None,
        url_keys=keys,
    )


def images(db: Database, request_id: str = "r1") -> list[Image]:
    with db.session() as session:
        return list(
            session.execute(
                select(Image).where(Image.request_id == request_id).order_by(Image.id)
            ).scalars()
        )


def done(key: str) -> ledger.ImageResult:
    return ledger.ImageResult(
        status=st.DONE,
        output_key=key,
        output_url=f"http://x/files/{key}",
        output_format="jpeg",
        bytes_in=1000,
        bytes_out=400,
        width=10,
        height=10,
        kept_original=False,
        quality=50,
    )


def test_only_the_first_position_of_each_url_is_returned_for_processing(db: Database) -> None:
    same = [A, "HTTPS://IMG.EXAMPLE:443/a.jpg", "https://img.example/a.jpg#zoom"]
    to_process = add(db, [[same[0], "https://img.example/b.jpg"], [same[1]], [same[2], A]])
    rows = images(db)
    assert len(rows) == 5
    first, b = rows[0], rows[1]
    assert to_process == [first.id, b.id]
    assert [r.source_image_id for r in rows] == [None, None, first.id, first.id, first.id]
    assert (first.followers, b.followers) == (3, 0)
    assert all(r.status == st.PENDING for r in rows)


def test_without_keys_nothing_is_linked(db: Database) -> None:
    products = [ProductRow(2, 1, "P", (A, A))]
    ids = ledger.create_request(
        db,
        request_id="plain",
        products=products,
        quality=50,
        output_format="keep",
        webhook_url=None,
        owner=None,
    )
    assert len(ids) == 2
    assert [r.source_image_id for r in images(db, "plain")] == [None, None]


def test_a_follower_is_never_claimed(db: Database) -> None:
    add(db, [[A, A]])
    source, follower = images(db)
    assert ledger.claim_images(db, [follower.id], 60) == []
    (claimed,) = ledger.claim_images(db, [follower.id, source.id], 60)
    assert (claimed.id, claimed.followers) == (source.id, 1)


@pytest.mark.parametrize("ok", [True, False])
def test_recording_the_source_settles_its_followers_in_the_same_transaction(
    db: Database, ok: bool
) -> None:
    add(db, [[A, "https://img.example/b.jpg"], [A]])
    (claimed,) = ledger.claim_images(db, [images(db)[0].id], 60)
    result = done("r1/1/0.jpg") if ok else ledger.ImageResult.failed("not_found", "HTTP 404")
    (recorded,) = ledger.record_results(db, [(claimed, result)])
    assert recorded.ours and not recorded.maybe_last  # b is still pending
    source, b, follower = images(db)
    assert b.status == st.PENDING
    for name in (
        "status",
        "error_code",
        "error_message",
        "output_key",
        "output_url",
        "bytes_in",
        "bytes_out",
        "width",
        "height",
        "quality",
    ):
        assert getattr(follower, name) == getattr(source, name), name
    assert follower.finished_at is not None and follower.lease_until is None
    (claimed_b,) = ledger.claim_images(db, [b.id], 60)
    (last,) = ledger.record_results(db, [(claimed_b, done("r1/1/1.jpg"))])
    assert last.maybe_last
    expected = st.COMPLETED if ok else st.COMPLETED_WITH_ERRORS
    assert ledger.finalize_request(db, "r1") == expected
    with db.session() as session:
        assert ledger.image_savings(session, "r1").bytes_in == (3000 if ok else 1000)


def test_a_cancelled_follower_stays_cancelled(db: Database) -> None:
    add(db, [[A, A]])
    (claimed,) = ledger.claim_images(db, [images(db)[0].id], 60)
    ledger.request_cancel(db, "r1")
    ledger.cancel_pending_images(db, "r1")
    assert images(db)[1].status == st.CANCELLED
    ledger.record_results(db, [(claimed, done("k"))])
    assert [r.status for r in images(db)] == [st.DONE, st.CANCELLED]


def test_the_sweeper_settles_followers_of_a_source_failed_outside_a_record(db: Database) -> None:
    add(db, [[A, A, A]])
    source = images(db)[0]
    ledger.claim_images(db, [source.id], 60, max_attempts=1)
    expire_lease(db, source.id)
    ledger.fail_exhausted_leases(db, max_attempts=1)
    assert [r.status for r in images(db)] == [st.FAILED, st.PENDING, st.PENDING]
    assert ledger.settle_followers(db) == ["r1"]
    assert [(r.status, r.error_code) for r in images(db)] == [(st.FAILED, "internal")] * 3
    assert ledger.settle_followers(db) == []


def test_followers_are_never_requeued_by_the_sweeper(db: Database) -> None:
    add(db, [[A, A]])
    source, _follower = images(db)
    lost = [i for ids in ledger.requeue_lost(db, ledger.utcnow(), 100) for i in ids]
    assert lost == [source.id]
    assert [i for ids in ledger.requeue_request(db, "r1") for i in ids] == [source.id]


def test_a_retry_enqueues_sources_only_and_followers_are_settled_again(db: Database) -> None:
    add(db, [[A, A]])
    source, _follower = images(db)
    (claimed,) = ledger.claim_images(db, [source.id], 60)
    ledger.record_results(db, [(claimed, ledger.ImageResult.failed("upstream", "HTTP 500"))])
    assert ledger.finalize_request(db, "r1") == st.FAILED
    outcome = ledger.retry_request(db, "r1", ["upstream"])
    assert (outcome.code, outcome.image_ids) == ("retried", [source.id])
    assert [r.status for r in images(db)] == [st.PENDING, st.PENDING]
    (claimed,) = ledger.claim_images(db, [source.id], 60)
    ledger.record_results(db, [(claimed, done("k"))])
    assert [r.status for r in images(db)] == [st.DONE, st.DONE]
