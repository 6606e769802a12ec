"""The sweeper finds lost jobs without flooding a busy queue (real SQLite ledger and queue)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

from imgbatch import ledger
from imgbatch.catalogue import ProductRow
from imgbatch.config import Settings
from imgbatch.context import Context
from imgbatch.jobs import sweep_once, sweeper
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


def run_queue(ctx: Context, until_mark: bool = False) -> list[list[int]]:
    """Take jobs out of the queue as workers would (all, or up to the sweeper's mark): image
    jobs are returned (not run), the mark is handled."""
    huey = ctx.queue.huey
    jobs = []
    while (task := huey.dequeue()) is not None:
        if task.name == "queue_mark":
            ledger.see_mark(ctx.db, task.args[0])
            if until_mark:
                break
        else:
            jobs.append(task.args[0])
    return jobs


def test_a_busy_backlog_is_never_flooded_however_old(tmp_path: Path) -> None:
    """Issue 11, defect 4: a pending image waiting in a long queue is not re-enqueued
    because it is old (the old rule re-enqueued every image older than
    IMGBATCH_LOST_JOB_SECONDS); only once the sweeper's mark has come out of the queue
    behind its job is an image still pending known to have lost it."""
    settings = Settings(
        data_dir=tmp_path, stale_pending_seconds=0, lost_job_seconds=3600, sweep_interval=60
    )
    upgrade(settings.resolved_database_url)
    ctx = Context(settings)
    waiting = pending_request(ctx)
    ledger.mark_enqueued(ctx.db, "r" * 32)
    ctx.queue.enqueue(waiting)  # its job is in the queue, behind a backlog
    ctx.queue.enqueue(list(range(1_000_000, 1_000_100)))  # someone else's backlog
    age(ctx, waiting, 7200)  # older than IMGBATCH_LOST_JOB_SECONDS: still not lost
    depth = ctx.queue.depth()
    for _ in range(3):
        assert sweep_once(ctx).stale == 0
    assert ctx.queue.depth() == depth + 1  # nothing but one mark was added

    # Workers take the jobs out up to the mark, but this image's job was lost on the way
    # (a worker killed between dequeue and claim) while more work arrived behind the mark
    # (new work takes turns from the front of the queue, `queue.fairness`: this is a key's
    # next request, queued behind that key's backlog).
    ctx.queue.enqueue(list(range(2_000_000, 2_000_100)), behind=10_000)
    jobs = run_queue(ctx, until_mark=True)
    assert [i for job in jobs for i in job if i in waiting] == waiting
    assert ctx.queue.depth() > 0
    assert sweep_once(ctx).stale == 1  # the queue is busy, but cannot hold its job any more
    for _ in range(2):
        assert sweep_once(ctx).stale == 0  # enqueued again just now: the queue holds it
    assert [i for job in run_queue(ctx) for i in job if i in waiting] == waiting
    ctx.queue.close()


def test_lost_jobs_come_back_when_the_queue_is_empty(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, stale_pending_seconds=60, lost_job_seconds=3600)
    upgrade(settings.resolved_database_url)
    ctx = Context(settings)
    ids = pending_request(ctx)
    ledger.mark_enqueued(ctx.db, "r" * 32)  # enqueued, and the queue lost it (a flush)
    age(ctx, ids, 30)  # a worker may have taken its job a moment ago and not claimed yet
    assert sweep_once(ctx).stale == 0
    age(ctx, ids, 600)  # the queue is empty: a pending image not enqueued since is lost
    assert sweep_once(ctx).stale == 1
    with ctx.db.session() as session:
        stamped = session.execute(select(Image.enqueued_at).where(Image.id == ids[0])).scalar_one()
    assert utcnow() - stamped < timedelta(seconds=60)
    ctx.queue.close()


def test_a_request_never_enqueued_comes_back_at_the_next_sweep_whatever_the_backlog(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 11, defect 5: an API killed between its commit and its enqueue left a request
    whose images waited for IMGBATCH_LOST_JOB_SECONDS behind a busy queue."""
    settings = Settings(data_dir=tmp_path, stale_pending_seconds=60, lost_job_seconds=3600)
    upgrade(settings.resolved_database_url)
    ctx = Context(settings)
    ctx.queue.enqueue(list(range(1_000_000, 1_020_000)))  # a 20,000-image backlog
    products = [
        ProductRow(row=i + 2, serial_number=i + 1, product_name="P", urls=(f"https://x/{i}",))
        for i in range(1200)
    ]
    ids = add_request(ctx.db, products, request_id="k" * 32)  # committed, never enqueued
    monkeypatch.setattr(sweeper, "ENQUEUE_GRACE_SECONDS", 0.0)  # as if seconds had passed
    report = sweep_once(ctx)
    assert report.unqueued == 1200
    huey = ctx.queue.huey
    queued = [
        i
        for m in huey.storage.enqueued_items()
        if huey.deserialize_task(m).name != "queue_mark"
        for i in huey.deserialize_task(m).args[0]
        if i < 1_000_000
    ]
    assert sorted(queued) == ids
    assert sweep_once(ctx).unqueued == 0  # marked enqueued: once only
    ctx.queue.close()


def test_an_accepted_upload_is_marked_enqueued(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    upgrade(settings.resolved_database_url)
    ctx = Context(settings)
    ids = pending_request(ctx)
    assert ledger.unenqueued_requests(ctx.db, utcnow()) == ["r" * 32]
    ctx.queue.enqueue(ids)
    ledger.mark_enqueued(ctx.db, "r" * 32)
    assert ledger.unenqueued_requests(ctx.db, utcnow()) == []
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
