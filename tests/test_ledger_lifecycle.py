"""Cancel and retry on real SQLite and real PostgreSQL: each race has exactly one outcome.

The races run in real threads, each with its own database connection, released together
by a barrier and repeated, so both orders of the conditional updates happen.
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
from imgbatch.ledger import Image, Request, utcnow
from imgbatch.ledger import statuses as st
from support.lifecycle import (
    deliveries,
    done,
    failed,
    image_statuses,
    ledger_context,
    new_request,
    race,
    request_row,
    settle,
)


@pytest.fixture(params=["sqlite", "postgresql"])
def ctx(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Context]:
    with ledger_context(request.param, tmp_path) as context:
        yield context


# --- cancel -------------------------------------------------------------------------


def test_cancel_stops_pending_images_and_in_flight_ones_finish(ctx: Context) -> None:
    request_id, ids = new_request(ctx, 5)
    settle(ctx, ids[:1])
    in_flight = ledger.claim_images(ctx.db, ids[1:3], lease_seconds=60)
    assert jobs.cancel(ctx, request_id)  # every pending image cancelled within the budget
    assert image_statuses(ctx, request_id) == {"done": 1, "processing": 2, "cancelled": 2}
    assert request_row(ctx, request_id).status == st.PROCESSING  # until in-flight ones end
    # A job for a cancelled image is a no-op: the ledger is the truth.
    assert ledger.claim_images(ctx.db, ids[3:], lease_seconds=60) == []
    with pytest.raises(ApiError) as again:
        jobs.cancel(ctx, request_id)
    assert (again.value.status, again.value.code) == (409, "already_finished")
    recorded = ledger.record_results(
        ctx.db, [(in_flight[0], done()), (in_flight[1], failed("timeout"))]
    )
    assert all(r.maybe_last for r in recorded)
    assert jobs.finalize(ctx, request_id) == st.CANCELLED
    row = request_row(ctx, request_id)
    assert row.status == st.CANCELLED and row.completed_at is not None
    assert image_statuses(ctx, request_id) == {"done": 2, "failed": 1, "cancelled": 2}
    ((run, _event, payload),) = deliveries(ctx, request_id)
    assert run == 1 and '"status":"cancelled"' in payload
    with pytest.raises(ApiError) as final:
        jobs.cancel(ctx, request_id)
    assert final.value.code == "already_finished"


def test_cancel_of_an_idle_request_finalizes_it_at_once(ctx: Context) -> None:
    request_id, _ = new_request(ctx, 3)
    assert jobs.cancel(ctx, request_id)
    row = request_row(ctx, request_id)
    assert row.status == st.CANCELLED and row.cancelled_at is not None
    assert image_statuses(ctx, request_id) == {"cancelled": 3}
    with ctx.db.session() as session:
        errors = session.execute(
            select(func.count()).where(
                Image.request_id == request_id, Image.error_code.is_not(None)
            )
        ).scalar()
    assert errors == 0  # cancelled images carry no error code


def test_a_large_cancel_works_in_batches_and_can_be_finished_later(ctx: Context) -> None:
    request_id, _ = new_request(ctx, 5000)
    # A zero budget stops after the first batch, as an API process that died would.
    assert not jobs.cancel(ctx, request_id, budget=0)
    counts = image_statuses(ctx, request_id)
    assert counts == {
        "cancelled": ledger.lifecycle.CANCEL_BATCH,
        "pending": 5000 - ledger.lifecycle.CANCEL_BATCH,
    }
    assert ledger.cancelling_request_ids(ctx.db) == [request_id]
    report = jobs.sweep_once(ctx)  # the sweeper finishes what the API left
    assert report.cancels == 1
    assert image_statuses(ctx, request_id) == {"cancelled": 5000}
    assert request_row(ctx, request_id).status == st.CANCELLED
    assert ledger.cancelling_request_ids(ctx.db) == []


def test_no_image_starts_once_a_cancel_is_accepted(ctx: Context) -> None:
    """Between the cancel's acceptance and its last batch, queued jobs (and the sweeper's
    re-queued expired leases) are no-ops: the claim sees the request's cancel."""
    request_id, ids = new_request(ctx, 3)
    assert ledger.request_cancel(ctx.db, request_id)  # accepted; no batch has run yet
    assert image_statuses(ctx, request_id) == {"pending": 3}
    assert ledger.claim_images(ctx.db, ids, lease_seconds=60) == []
    assert image_statuses(ctx, request_id) == {"pending": 3}


def test_two_concurrent_cancels_have_one_winner(ctx: Context) -> None:
    for _ in range(10):
        request_id, ids = new_request(ctx, 40)
        settle(ctx, ids[:5])
        results = race(partial(jobs.cancel, ctx, request_id), partial(jobs.cancel, ctx, request_id))
        assert sorted(type(r).__name__ for r in results) == ["ApiError", "bool"], results
        assert [r.code for r in results if isinstance(r, ApiError)] == ["already_finished"]
        assert request_row(ctx, request_id).status == st.CANCELLED
        assert image_statuses(ctx, request_id) == {"done": 5, "cancelled": 35}
        assert len(deliveries(ctx, request_id)) == 1


def test_a_cancel_racing_the_last_image_has_one_outcome(ctx: Context) -> None:
    outcomes = set()
    for _ in range(20):
        request_id, ids = new_request(ctx, 3)
        settle(ctx, ids[:2])
        (last,) = ledger.claim_images(ctx.db, ids[2:], lease_seconds=60)

        def finish_last(last: ledger.ClaimedImage = last, request_id: str = request_id) -> Any:
            (recorded,) = ledger.record_results(ctx.db, [(last, done())])
            return jobs.finalize(ctx, request_id) if recorded.maybe_last else None

        cancelled, finalized = race(partial(jobs.cancel, ctx, request_id), finish_last)
        status = request_row(ctx, request_id).status
        assert image_statuses(ctx, request_id) == {"done": 3}
        if isinstance(cancelled, ApiError):  # the last image finalized first
            assert cancelled.code == "already_finished"
            assert status == st.COMPLETED and finalized == st.COMPLETED
        else:  # the cancel was accepted first: the request ends cancelled
            assert cancelled is True and status == st.CANCELLED
        outcomes.add(status)
        ((_run, _event, payload),) = deliveries(ctx, request_id)  # one event either way
        assert f'"status":"{status}"' in payload
    assert outcomes <= {st.COMPLETED, st.CANCELLED}
    print(f"cancel vs last image outcomes: {sorted(outcomes)}")


# --- retry --------------------------------------------------------------------------


def finished_with_failures(ctx: Context) -> tuple[str, list[int]]:
    """A request of 6 images: 2 done, 2 failed `upstream`, 1 `timeout`, 1 `not_found`."""
    request_id, ids = new_request(ctx, 6)
    settle(ctx, ids[:2])
    settle(ctx, ids[2:4], failed("upstream"))
    settle(ctx, ids[4:5], failed("timeout"))
    settle(ctx, ids[5:], failed("not_found"))
    assert request_row(ctx, request_id).status == st.COMPLETED_WITH_ERRORS
    return request_id, ids


def test_retry_by_codes_runs_the_request_again_with_a_new_event(ctx: Context) -> None:
    request_id, ids = finished_with_failures(ctx)
    assert ctx.queue.depth() == 0
    assert jobs.retry(ctx, request_id, ["upstream", "timeout"]) == 3
    row = request_row(ctx, request_id)
    assert (row.status, row.runs, row.completed_at) == (st.PROCESSING, 2, None)
    assert image_statuses(ctx, request_id) == {"done": 2, "pending": 3, "failed": 1}
    assert ctx.queue.depth() >= 1  # enqueued after the commit
    with ctx.db.session() as session:
        reset = session.execute(
            select(Image.attempts, Image.error_code, Image.finished_at).where(
                Image.id.in_(ids[2:5])
            )
        ).all()
    assert reset == [(0, None, None)] * 3
    settle(ctx, ids[2:5])
    assert request_row(ctx, request_id).status == st.COMPLETED_WITH_ERRORS  # not_found stays
    events = deliveries(ctx, request_id)
    assert [run for run, _, _ in events] == [1, 2]
    assert events[0][1] != events[1][1]  # a new webhook-id for the new event
    assert '"succeeded":5' in events[1][2]


def test_an_old_request_retried_a_moment_ago_is_left_to_its_own_enqueue(ctx: Context) -> None:
    """The sweeper's fast path for lost enqueues waits out its grace from the retry, not
    from the upload: else it re-enqueues every image while the API is still enqueueing."""
    request_id, _ = finished_with_failures(ctx)
    with ctx.db.session() as session:
        session.execute(
            update(Request)
            .where(Request.id == request_id)
            .values(created_at=utcnow() - timedelta(days=1))
        )
    outcome = ledger.retry_request(ctx.db, request_id, None)  # the enqueue has not run yet
    assert outcome.image_ids
    grace = utcnow() - timedelta(seconds=10)
    assert request_id not in ledger.unenqueued_requests(ctx.db, grace)
    later = utcnow() + timedelta(seconds=1)  # once the grace has passed, it is found
    assert request_id in ledger.unenqueued_requests(ctx.db, later)


def test_retry_refuses_unfinished_requests_and_empty_selections(ctx: Context) -> None:
    request_id, ids = new_request(ctx, 2)
    with pytest.raises(ApiError) as running:
        jobs.retry(ctx, request_id)
    assert (running.value.status, running.value.code) == (409, "not_finished")
    settle(ctx, ids)
    with pytest.raises(ApiError) as nothing:
        jobs.retry(ctx, request_id)
    assert nothing.value.code == "nothing_to_retry"
    failures, _ = finished_with_failures(ctx)
    with pytest.raises(ApiError) as other_codes:
        jobs.retry(ctx, failures, ["too_large"])
    assert other_codes.value.code == "nothing_to_retry"
    row = request_row(ctx, failures)  # nothing changed: still final, still run 1
    assert (row.status, row.runs) == (st.COMPLETED_WITH_ERRORS, 1)
    with pytest.raises(ApiError) as unknown:
        jobs.retry(ctx, "nosuchrequest")
    assert unknown.value.status == 404


def test_retry_of_a_cancelled_request_resumes_its_cancelled_images(ctx: Context) -> None:
    request_id, ids = new_request(ctx, 4)
    settle(ctx, ids[:1], failed("upstream"))
    jobs.cancel(ctx, request_id)
    assert request_row(ctx, request_id).status == st.CANCELLED
    assert jobs.retry(ctx, request_id, ["timeout"]) == 3  # cancelled ones, whatever the codes
    row = request_row(ctx, request_id)
    assert (row.status, row.cancelled_at) == (st.PROCESSING, None)
    settle(ctx, ids[1:])
    assert request_row(ctx, request_id).status == st.COMPLETED_WITH_ERRORS
    assert [run for run, _, _ in deliveries(ctx, request_id)] == [1, 2]


def test_two_concurrent_retries_have_one_winner(ctx: Context) -> None:
    for _ in range(10):
        request_id, _ids = finished_with_failures(ctx)
        results = race(partial(jobs.retry, ctx, request_id), partial(jobs.retry, ctx, request_id))
        assert sorted(map(str, results)).count("4") == 1, results
        (loser,) = [r for r in results if isinstance(r, ApiError)]
        assert loser.code == "not_finished"
        row = request_row(ctx, request_id)
        assert (row.status, row.runs) == (st.PROCESSING, 2)
        assert image_statuses(ctx, request_id) == {"done": 2, "pending": 4}


def test_a_retry_racing_a_sweep_is_never_finalized_by_it(ctx: Context) -> None:
    for _ in range(10):
        request_id, _ids = finished_with_failures(ctx)
        retried, report = race(partial(jobs.retry, ctx, request_id), partial(jobs.sweep_once, ctx))
        assert retried == 4 and report.finalized == 0
        row = request_row(ctx, request_id)
        assert (row.status, row.runs, row.completed_at) == (st.PROCESSING, 2, None)
        assert [run for run, _, _ in deliveries(ctx, request_id)] == [1]
