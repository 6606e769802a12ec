"""A request's life after its upload: cancel and retry, each decided by a conditional update.

These are the state changes a user starts (the workers' claim, record and finalize are in
`operations`). Each must have exactly one outcome however many API processes, workers
and sweepers race it, so each is decided by one conditional UPDATE of the request row:

- **cancel**: `cancelled_at` goes from NULL to now while the request is unfinished; the
  one caller that wins then cancels the pending images in small batches (a 50,000-image
  request never holds the write lock for long; PostgreSQL skips rows a claim holds) while
  images in flight finish; the finalizer then ends the request `cancelled`
  (`statuses.final_status`).
- **retry**: in one transaction a final request goes back to `processing` in a new run
  (`runs + 1`: its next finalization creates a new webhook event) and its failed images
  (those with the given reason codes) and cancelled images go back to `pending`. If no
  image would change, nothing does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import cast

from sqlalchemy import Table, and_, exists, or_, select, update

from . import statuses as st
from .clock import utcnow
from .engine import Database
from .models import Image, Request

CANCEL_BATCH = 2000  # images per cancelling UPDATE: a few ms of write lock each

_images = cast(Table, Image.__table__)
_requests = cast(Table, Request.__table__)


def request_cancel(db: Database, request_id: str) -> bool:
    """Accept a cancel: True for the one caller that moved `cancelled_at` from NULL.

    False when the request is unknown, already final, or already being cancelled.
    """
    now = utcnow()
    with db.connection() as conn:
        result = conn.execute(
            update(_requests)
            .where(
                _requests.c.id == request_id,
                _requests.c.status.in_(st.UNFINISHED),
                _requests.c.cancelled_at.is_(None),
            )
            .values(cancelled_at=now, updated_at=now)
        )
        return bool(result.rowcount)


def cancel_pending_images(db: Database, request_id: str, limit: int = CANCEL_BATCH) -> int:
    """Cancel up to `limit` pending images of the request; returns how many.

    Rows another transaction holds (a worker claiming them right now) are skipped on
    PostgreSQL: that claim wins, and its images finish and count.
    """
    now = utcnow()
    batch = (
        select(_images.c.id)
        .where(_images.c.request_id == request_id, _images.c.status == st.PENDING)
        .order_by(_images.c.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    with db.connection() as conn:
        result = conn.execute(
            update(_images)
            .where(_images.c.id.in_(batch.scalar_subquery()), _images.c.status == st.PENDING)
            .values(status=st.CANCELLED, lease_until=None, finished_at=now)
        )
        return int(result.rowcount)


def has_pending_images(db: Database, request_id: str) -> bool:
    with db.connection() as conn:
        return bool(
            conn.execute(
                select(
                    exists().where(
                        _images.c.request_id == request_id, _images.c.status == st.PENDING
                    )
                )
            ).scalar()
        )


def cancelling_request_ids(db: Database, limit: int = 100) -> list[str]:
    """Requests whose cancel was accepted but which still have pending images.

    A cancel normally finishes in its API process; this finds one whose process died,
    and images a sweeper put back to pending after the cancel (expired leases).
    """
    pending = exists().where(_images.c.request_id == _requests.c.id, _images.c.status == st.PENDING)
    with db.connection() as conn:
        rows = conn.execute(
            select(_requests.c.id)
            .where(
                _requests.c.status.in_(st.UNFINISHED),
                _requests.c.cancelled_at.is_not(None),
                pending,
            )
            .limit(limit)
        )
        return [row.id for row in rows]


@dataclass(frozen=True)
class RetryOutcome:
    """What a retry came to: `retried` (with the images to enqueue), `not_found`,
    `not_finished` or `nothing_to_retry`."""

    code: str
    image_ids: list[int] = field(default_factory=list)


class _NothingToRetry(Exception):
    pass


def retry_request(db: Database, request_id: str, codes: Sequence[str] | None) -> RetryOutcome:
    """Put a final request's failed (and cancelled) images back to pending, in a new run.

    `codes` limits the failed images retried to those reason codes (None: all). Cancelled
    images are always retried: retrying a cancelled request resumes it.
    """
    now = utcnow()
    failed = _images.c.status == st.FAILED
    if codes is not None:
        failed = and_(failed, _images.c.error_code.in_(list(codes)))
    chosen = or_(_images.c.status == st.CANCELLED, failed)
    try:
        with db.connection() as conn:
            won = conn.execute(
                update(_requests)
                .where(
                    _requests.c.id == request_id,
                    _requests.c.status.in_(st.FINAL),
                    _requests.c.deleted_at.is_(None),  # a delete (or retention) won it
                )
                .values(
                    status=st.PROCESSING,
                    completed_at=None,
                    cancelled_at=None,
                    runs=_requests.c.runs + 1,
                    enqueued=False,  # until the caller's enqueue: else the sweeper does it
                    updated_at=now,
                    # no summary while it runs again (history counts its images live)
                    done_images=None,
                    failed_images=None,
                    cancelled_images=None,
                    bytes_in=None,
                    bytes_out=None,
                )
            ).rowcount
            if not won:
                row = conn.execute(
                    select(_requests.c.deleted_at).where(_requests.c.id == request_id)
                ).first()
                gone = row is None or row.deleted_at is not None
                return RetryOutcome("not_found" if gone else "not_finished")
            ids = conn.execute(
                update(_images)
                .where(_images.c.request_id == request_id, chosen)
                .values(
                    status=st.PENDING,
                    attempts=0,
                    lease_until=None,
                    enqueued_at=now,
                    error_code=None,
                    error_message=None,
                    started_at=None,
                    finished_at=None,
                    # a retry starts afresh: no delay, no streak of backend faults
                    retry_at=None,
                    fault_since=None,
                    fault_kind=None,
                )
                .returning(_images.c.id, _images.c.source_image_id)
            ).all()
            if not ids:
                raise _NothingToRetry  # rolls the request's change back too
    except _NothingToRetry:
        return RetryOutcome("nothing_to_retry")
    # A repeated URL's later positions are settled by their source (its record, or the
    # sweeper when the source stayed done), never enqueued.
    return RetryOutcome("retried", sorted(row.id for row in ids if row.source_image_id is None))
