"""The sweeper finds lost jobs without flooding a busy queue (real SQLite ledger and queue)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from sqlalchemy import select, update

from imgbatch import ledger
from imgbatch.catalogue import ProductRow
from imgbatch.config import Settings
from imgbatch.context import Context
from imgbatch.jobs import sweep_once
from imgbatch.ledger import Image, upgrade, utcnow
from support.databases import add_request


def pending_request(ctx: Context) -> list[int]:
    products = [
        ProductRow(row=2, serial_number=1, product_name="P", urls=("https://x.example/a.jpg",))
    ]
    return add_request(ctx.db, products, request_id="r" * 32)


def age(ctx: Context, ids: list[int], seconds: float) -> None:
    with ctx.db.session() as session:
        session.execute(
            update(Image)
            .where(Image.id.in_(ids))
            .values(enqueued_at=utcnow() - timedelta(seconds=seconds))
        )


def test_lost_jobs_come_back_when_the_queue_is_empty_or_after_an_hour_when_busy(
    tmp_path: Path,
) -> None:
    settings = Settings(data_dir=tmp_path, stale_pending_seconds=60, lost_job_seconds=3600)
    upgrade(settings.resolved_database_url)
    ctx = Context(settings)
    ids = pending_request(ctx)  # in the ledger, never enqueued: as if the enqueue was lost
    ctx.queue.enqueue([999_999])  # someone else's backlog keeps the queue busy

    age(ctx, ids, 600)  # stale, but the queue is busy: it may just be waiting its turn
    assert sweep_once(ctx).stale == 0
    age(ctx, ids, 7200)  # still pending after an hour of a busy queue: lost
    assert sweep_once(ctx).stale == 1
    assert ctx.queue.depth() == 2
    assert sweep_once(ctx).stale == 0  # re-stamped: not enqueued again on the next pass

    ctx.queue.flush()
    age(ctx, ids, 600)  # the queue is empty: a stale pending image is certainly lost
    assert sweep_once(ctx).stale == 1
    with ctx.db.session() as session:
        stamped = session.execute(select(Image.enqueued_at).where(Image.id == ids[0])).scalar_one()
    assert utcnow() - stamped < timedelta(seconds=60)
    ctx.queue.close()


def test_images_of_a_dead_worker_come_back_one_per_job(tmp_path: Path) -> None:
    """One of them may be the image that killed the worker: alone, it cannot take its
    neighbours' attempts with it. Lost pending images are batched as usual."""
    settings = Settings(data_dir=tmp_path, stale_pending_seconds=60, images_per_job=8)
    upgrade(settings.resolved_database_url)
    ctx = Context(settings)
    products = [
        ProductRow(row=i + 2, serial_number=i + 1, product_name="P", urls=(f"https://x/{i}",))
        for i in range(300)
    ]
    ids = add_request(ctx.db, products, request_id="d" * 32)
    dead, lost = ids[:100], ids[100:]
    assert len(ledger.claim_images(ctx.db, dead, lease_seconds=60)) == 100
    with ctx.db.session() as session:
        session.execute(
            update(Image).where(Image.id.in_(dead)).values(lease_until=utcnow() - timedelta(1))
        )
    age(ctx, lost, 600)
    report = sweep_once(ctx)
    assert (report.expired, report.stale) == (100, 200)
    huey = ctx.queue.huey
    jobs = [huey.deserialize_task(m).args[0] for m in huey.storage.enqueued_items()]
    singles = [job for job in jobs if set(job) <= set(dead)]
    assert sorted(i for job in singles for i in job) == dead
    assert all(len(job) == 1 for job in singles)
    batched = [job for job in jobs if set(job) <= set(lost)]
    assert sorted(i for job in batched for i in job) == lost
    assert max(len(job) for job in batched) == 6  # 200 // 32: still spread over 32+ jobs
    ctx.queue.close()
