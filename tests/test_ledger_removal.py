"""Deleting requests and the retention period, on real SQLite and PostgreSQL with real files.

Objects go before the rows that name them; a deletion that stops half-way leaves a request
that can be deleted again and no visible row pointing at nothing; a delete or a retention
sweep racing a retry has exactly one outcome.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, update

from imgbatch import jobs, ledger
from imgbatch.context import Context
from imgbatch.errors import ApiError
from imgbatch.jobs import removal
from imgbatch.ledger import Image, Product, Request, WebhookDelivery
from imgbatch.ledger import statuses as st
from imgbatch.reports import get_request
from imgbatch.storage import StorageError
from support.lifecycle import (
    deliveries,
    failed,
    ledger_context,
    new_request,
    race,
    request_row,
    settle,
)


@pytest.fixture(params=["sqlite", "postgresql"])
def ctx(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Context]:
    with ledger_context(request.param, tmp_path, storage_fsync=False) as context:
        context.storage.check()
        yield context


def stored(ctx: Context, images: int, failures: int = 0) -> tuple[str, list[str]]:
    """A final request whose done images have real objects; returns it and the object keys."""
    request_id, ids = new_request(ctx, images + failures)
    claimed = ledger.claim_images(ctx.db, ids, lease_seconds=60)
    results = []
    for image in claimed[:images]:
        key = f"{request_id}/{image.serial_number}/{image.position}.jpg"
        ctx.storage.put(key, b"jpeg" * 10, "image/jpeg")
        results.append((image, ledger.ImageResult(status=st.DONE, output_key=key, bytes_out=40)))
    results += [(image, failed("upstream")) for image in claimed[images:]]
    ledger.record_results(ctx.db, results)
    assert jobs.finalize(ctx, request_id) in st.FINAL
    return request_id, sorted(key for _, result in results if (key := result.output_key))


def rows(ctx: Context, request_id: str) -> dict[str, int]:
    with ctx.db.session() as session:
        return {
            table.__tablename__: session.execute(
                select(func.count()).select_from(table).where(table.request_id == request_id)
            ).scalar_one()
            for table in (Image, Product, WebhookDelivery)
        } | {
            "requests": session.execute(
                select(func.count()).select_from(Request).where(Request.id == request_id)
            ).scalar_one()
        }


GONE = {"images": 0, "products": 0, "webhook_deliveries": 0, "requests": 0}


def test_delete_removes_objects_then_rows(ctx: Context) -> None:
    request_id, keys = stored(ctx, 4, failures=1)
    other, other_keys = stored(ctx, 2)
    orphan = f"{request_id}/9/9.jpg"  # an attempt whose result was dropped: no row names it
    ctx.storage.put(orphan, b"x", "image/jpeg")
    assert len(deliveries(ctx, request_id)) == 1
    assert jobs.delete(ctx, request_id)
    assert ctx.storage.list_keys(f"{request_id}/") == []
    assert not (ctx.settings.data_dir / "images" / request_id).exists()  # no empty directories
    assert rows(ctx, request_id) == GONE
    assert ctx.storage.list_keys() == other_keys  # another request is untouched
    assert rows(ctx, other)["images"] == 2
    with pytest.raises(ApiError) as again:
        jobs.delete(ctx, request_id)
    assert again.value.status == 404
    assert keys  # the objects existed


def test_a_stopped_deletion_hides_the_request_and_can_be_asked_again(
    ctx: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    request_id, keys = stored(ctx, 5)
    monkeypatch.setattr(ledger.removal, "IMAGE_BATCH", 2)
    real = ctx.storage.delete_many
    calls = []

    def failing_second_time(batch: Any) -> None:
        calls.append(list(batch))
        if len(calls) == 2:
            raise StorageError("the store went away")
        real(batch)

    monkeypatch.setattr(ctx.storage, "delete_many", failing_second_time)
    assert jobs.delete(ctx, request_id) is False  # marked deleted; the rest goes on later
    with pytest.raises(ApiError) as hidden:  # every route 404s from the tombstone on
        get_request(ctx, request_id, None)
    assert hidden.value.status == 404
    assert get_request(ctx, request_id, None, deleting=True).deleted_at is not None
    assert deliveries(ctx, request_id) == []  # nothing more is sent about it
    left = ctx.storage.list_keys(f"{request_id}/")
    with ctx.db.session() as session:
        named = sorted(
            session.execute(select(Image.output_key).where(Image.request_id == request_id))
            .scalars()
            .all()
        )
    assert len(named) == 3 and set(named) <= set(left)  # no row points at nothing
    with pytest.raises(ApiError) as retried:
        jobs.retry(ctx, request_id)
    assert retried.value.status == 404
    monkeypatch.undo()
    assert jobs.delete(ctx, request_id)  # asked again: it goes on where it stopped
    assert ctx.storage.list_keys() == [] and rows(ctx, request_id) == GONE
    assert keys


def test_delete_refuses_a_running_request(ctx: Context) -> None:
    request_id, ids = new_request(ctx, 2)
    settle(ctx, ids[:1])
    with pytest.raises(ApiError) as running:
        jobs.delete(ctx, request_id)
    assert (running.value.status, running.value.code) == (409, "not_finished")
    assert request_row(ctx, request_id).deleted_at is None
    with pytest.raises(ApiError) as unknown:
        jobs.delete(ctx, "nosuchrequest")
    assert unknown.value.status == 404


def test_a_large_request_is_deleted_in_bounded_batches(
    ctx: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Removing a directory costs ~3 ms on this machine's disk: room for a slow run.
    monkeypatch.setattr(removal, "SWEEP_BUDGET", 120.0)
    request_id, keys = stored(ctx, 1300)
    assert not jobs.delete(ctx, request_id, budget=0)  # one batch, then the API would answer
    assert rows(ctx, request_id)["images"] == 300
    assert len(ctx.storage.list_keys(f"{request_id}/")) == 300
    assert ledger.removal.IMAGE_BATCH == 1000
    report = jobs.sweep_once(ctx)  # a fresh tombstone is left to the remover working on it
    assert report.deleted == 0 and rows(ctx, request_id)["images"] == 300
    with ctx.db.session() as session:  # a minute later nobody is: the sweeper finishes it
        session.execute(
            update(Request)
            .where(Request.id == request_id)
            .values(deleted_at=ledger.utcnow() - timedelta(minutes=2))
        )
    assert jobs.sweep_once(ctx).deleted == 1
    assert rows(ctx, request_id) == GONE and ctx.storage.list_keys() == []
    assert len(keys) == 1300


def test_two_concurrent_deletes_remove_it_once(ctx: Context) -> None:
    for _ in range(5):
        request_id, _keys = stored(ctx, 30)
        results = race(partial(jobs.delete, ctx, request_id), partial(jobs.delete, ctx, request_id))
        assert not [r for r in results if isinstance(r, Exception) and not isinstance(r, ApiError)]
        assert any(r is True for r in results), results
        assert rows(ctx, request_id) == GONE
        assert ctx.storage.list_keys(f"{request_id}/") == []


def test_a_delete_racing_a_retry_has_one_outcome(ctx: Context) -> None:
    outcomes = set()
    for _ in range(10):
        request_id, _keys = stored(ctx, 2, failures=2)
        deleted, retried = race(
            partial(jobs.delete, ctx, request_id), partial(jobs.retry, ctx, request_id)
        )
        if deleted is True:
            assert isinstance(retried, ApiError) and retried.status == 404
            assert rows(ctx, request_id) == GONE
            outcomes.add("deleted")
        else:
            assert retried == 2, (deleted, retried)
            assert isinstance(deleted, ApiError) and deleted.code == "not_finished"
            assert request_row(ctx, request_id).status == st.PROCESSING
            assert len(ctx.storage.list_keys(f"{request_id}/")) == 2  # done images kept
            outcomes.add("retried")
    assert outcomes <= {"deleted", "retried"}


def age(ctx: Context, request_id: str, days: float) -> None:
    """What the passing of time does: the request finished `days` ago."""
    with ctx.db.session() as session:
        session.execute(
            update(Request)
            .where(Request.id == request_id)
            .values(completed_at=ledger.utcnow() - timedelta(days=days))
        )


def test_retention_deletes_final_requests_past_the_period(ctx: Context) -> None:
    old, _ = stored(ctx, 2)
    recent, recent_keys = stored(ctx, 1)
    running, ids = new_request(ctx, 2)
    settle(ctx, ids[:1])
    for request_id in (old, running):
        age(ctx, request_id, 10)
    assert jobs.sweep_once(ctx).deleted == 0  # 0 days: kept forever
    assert rows(ctx, old)["requests"] == 1
    keeping = Context(ctx.settings.model_copy(update={"retention_days": 7}))
    assert jobs.sweep_once(keeping).deleted == 1
    assert rows(ctx, old) == GONE
    assert ctx.storage.list_keys() == recent_keys
    assert rows(ctx, recent)["requests"] == 1 and rows(ctx, running)["requests"] == 1
    assert jobs.sweep_once(keeping).deleted == 0


def test_a_retention_sweep_racing_a_retry_has_one_outcome(ctx: Context) -> None:
    keeping = Context(ctx.settings.model_copy(update={"retention_days": 1}))
    for _ in range(8):
        request_id, _keys = stored(ctx, 1, failures=2)
        age(ctx, request_id, 3)
        retried, report = race(
            partial(jobs.retry, keeping, request_id), partial(jobs.sweep_once, keeping)
        )
        if retried == 2:  # the retry won: the request runs again and is not deleted
            assert report.deleted == 0
            row = request_row(ctx, request_id)
            assert (row.status, row.deleted_at) == (st.PROCESSING, None)
        else:  # the sweep won: the retry finds nothing
            assert isinstance(retried, ApiError) and retried.status == 404, retried
            assert report.deleted == 1 and rows(ctx, request_id) == GONE
