"""Work given back by a backend's fault, and work the queue lost: the sweeper's ledger side.

- `give_back` releases claimed images to `pending` with a delay (`retry_at`) and undoes
  the claim's attempt: a backend's fault is not the image's, so it must not use up the
  attempts that protect the workers from a poison image.
- The sweeper's statements work in batches of a few hundred rows, each in its own short
  transaction; on PostgreSQL their sub-selects skip rows another transaction holds
  (`FOR UPDATE SKIP LOCKED`), so a sweep never waits for a worker, nor a worker for a
  sweep, and neither can deadlock with the other. Each batch comes back to the caller to
  be enqueued before the next one is taken.
- `queue_marks` holds one row: the sweeper's mark travelling through the queue. It is
  enqueued behind every job waiting, so once a mark sent at T comes out, every job
  enqueued before T has left the queue, and a pending image enqueued before T has
  certainly lost its job.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import ColumnElement, Table, and_, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from imgbatch.ledger import statuses as st

from .clock import utcnow
from .engine import Database
from .models import Image, QueueMark, Request
from .operations import _RESULT_FIELDS, ClaimedImage
from .transient import retry_deadlocks

_images = cast(Table, Image.__table__)
_marks = cast(Table, QueueMark.__table__)
_requests = cast(Table, Request.__table__)

SWEEP_BATCH = 500  # rows per sweeper transaction: short enough never to hold workers up


@dataclass(frozen=True)
class Release:
    """A claimed image going back to `pending` after a backend's fault."""

    claimed: ClaimedImage
    kind: str  # the backend: storage, fetch, ...
    message: str  # the last error, recorded if the image finally fails
    retry_at: datetime
    since: datetime  # when the image's streak of faults began


@retry_deadlocks
def give_back(db: Database, releases: Sequence[Release]) -> list[bool]:
    """Release the images we hold; one flag per release: False when the claim was not ours."""
    ours = {}
    with db.connection() as conn:
        for release in sorted(releases, key=lambda r: r.claimed.id):  # one lock order
            claimed = release.claimed
            result = conn.execute(
                update(_images)
                .where(
                    _images.c.id == claimed.id,
                    _images.c.status == st.PROCESSING,
                    _images.c.attempts == claimed.attempt,
                )
                .values(
                    status=st.PENDING,
                    attempts=_images.c.attempts - 1,
                    lease_until=None,
                    enqueued_at=None,  # the sweeper enqueues it once `retry_at` has passed
                    retry_at=release.retry_at,
                    fault_since=release.since,
                    fault_kind=release.kind,
                    error_code=release.kind,
                    error_message=release.message[:2000],
                )
            )
            ours[claimed.id] = bool(result.rowcount)
    return [ours[r.claimed.id] for r in releases]


@retry_deadlocks
def _update_batch(
    db: Database, where: ColumnElement[bool], values: dict[str, Any], n: int
) -> list[int]:
    with db.connection() as conn:  # one short transaction per batch
        locked = (
            select(_images.c.id).where(where).limit(n).with_for_update(skip_locked=True)
        ).scalar_subquery()
        statement = (
            update(_images)
            .where(_images.c.id.in_(locked), where)
            .values(**values)
            .returning(_images.c.id)
        )
        return sorted(conn.execute(statement).scalars())


def _batches(
    db: Database, where: ColumnElement[bool], values: dict[str, Any], limit: int, batch: int
) -> Iterator[list[int]]:
    """Update matching images batch by batch (each batch no longer matches), up to `limit`."""
    done = 0
    while done < limit:
        ids = _update_batch(db, where, values, min(batch, limit - done))
        if not ids:
            return
        done += len(ids)
        yield ids


def _due(now: datetime) -> ColumnElement[bool]:
    """Claimable at `now`: no backend's delay pending, and not a repeated URL's follower
    (a follower is settled by its source's result, never enqueued)."""
    return and_(
        or_(_images.c.retry_at.is_(None), _images.c.retry_at <= now),
        _images.c.source_image_id.is_(None),
    )


def fail_exhausted_leases(db: Database, max_attempts: int, batch: int = SWEEP_BATCH) -> int:
    """Expired claims of images out of attempts: failed (a poison image kills its workers)."""
    now = utcnow()
    where = and_(
        _images.c.status == st.PROCESSING,
        _images.c.lease_until < now,
        _images.c.attempts >= max_attempts,
    )
    values = {
        "status": st.FAILED,
        "lease_until": None,
        "finished_at": now,
        "error_code": "internal",
        "error_message": f"gave up after {max_attempts} attempts that did not finish",
    }
    return sum(len(ids) for ids in _batches(db, where, values, 2**62, batch))


def requeue_expired_leases(db: Database, max_attempts: int) -> list[int]:
    """`expired_lease_batches` in one list."""
    return [i for ids in expired_lease_batches(db, max_attempts) for i in ids]


def expired_lease_batches(
    db: Database, max_attempts: int, limit: int = 2**62, batch: int = SWEEP_BATCH
) -> Iterator[list[int]]:
    """Images whose worker died (lease expired): back to pending, batch by batch.

    Images out of attempts are failed first (`fail_exhausted_leases`).
    """
    fail_exhausted_leases(db, max_attempts, batch)
    now = utcnow()
    where = and_(_images.c.status == st.PROCESSING, _images.c.lease_until < now)
    yield from _batches(
        db, where, {"status": st.PENDING, "lease_until": None, "enqueued_at": now}, limit, batch
    )


def requeue_lost(
    db: Database, enqueued_before: datetime, limit: int, batch: int = SWEEP_BATCH
) -> Iterator[list[int]]:
    """Pending images last enqueued before `enqueued_before`, whose job the queue no longer holds."""
    now = utcnow()
    where = and_(_images.c.status == st.PENDING, _images.c.enqueued_at < enqueued_before, _due(now))
    yield from _batches(db, where, {"enqueued_at": now}, limit, batch)


def requeue_stale_pending(
    db: Database, older_than: datetime, limit: int = 10_000, batch: int = SWEEP_BATCH
) -> list[int]:
    """`requeue_lost` in one list (kept for callers that enqueue afterwards)."""
    return [i for ids in requeue_lost(db, older_than, limit, batch) for i in ids]


def requeue_due(db: Database, limit: int, batch: int = SWEEP_BATCH) -> Iterator[list[int]]:
    """Images a backend's fault gave back, whose delay has run out: to be enqueued now."""
    now = utcnow()
    where = and_(_images.c.status == st.PENDING, _images.c.enqueued_at.is_(None), _due(now))
    yield from _batches(db, where, {"enqueued_at": now}, limit, batch)


# --- requests whose enqueue never happened ------------------------------------------------


def unenqueued_requests(db: Database, created_before: datetime) -> list[str]:
    """Requests whose enqueue (an upload's, or a retry's) never finished, though it began
    before `created_before`: `updated_at`, which a retry sets, not `created_at`, so an old
    request retried a moment ago is left to the retry's own enqueue."""
    with db.connection() as conn:
        return list(
            conn.execute(
                select(_requests.c.id)
                .where(
                    _requests.c.enqueued.is_(False),
                    _requests.c.updated_at < created_before,
                    _requests.c.status != st.RECEIVING,  # its upload is still writing it
                )
                .order_by(_requests.c.created_at)
            ).scalars()
        )


def requeue_request(db: Database, request_id: str, batch: int = SWEEP_BATCH) -> Iterator[list[int]]:
    """Every pending image of the request, stamped as enqueued now, batch by batch."""
    now = utcnow()
    where = and_(
        _images.c.request_id == request_id,
        _images.c.status == st.PENDING,
        or_(_images.c.enqueued_at.is_(None), _images.c.enqueued_at < now),
        _due(now),
    )
    yield from _batches(db, where, {"enqueued_at": now}, 2**62, batch)


def mark_enqueued(db: Database, request_id: str) -> None:
    """The request's jobs are in the queue: the sweeper need not enqueue them."""
    with db.connection() as conn:
        conn.execute(
            update(_requests)
            .where(_requests.c.id == request_id, _requests.c.enqueued.is_(False))
            .values(enqueued=True)
        )


# --- the mark travelling through the queue ------------------------------------------------


@dataclass(frozen=True)
class MarkState:
    """The last mark sent: `seen_at` is set once a worker took it out of the queue."""

    token: int
    sent_at: datetime | None
    sent_depth: int | None
    seen_at: datetime | None


def read_mark(db: Database) -> MarkState:
    with db.connection() as conn:
        row = conn.execute(
            select(_marks.c.token, _marks.c.sent_at, _marks.c.sent_depth, _marks.c.seen_at).where(
                _marks.c.id == 1
            )
        ).first()
    if row is None:
        return MarkState(0, None, None, None)
    return MarkState(row.token, row.sent_at, row.sent_depth, row.seen_at)


def send_mark(db: Database, token: int, depth: int) -> int | None:
    """Replace mark `token` by a new one (returned); None when another sweeper did it first."""
    now = utcnow()
    with db.connection() as conn:
        changed = conn.execute(
            update(_marks)
            .where(_marks.c.id == 1, _marks.c.token == token)
            .values(token=token + 1, sent_at=now, sent_depth=depth, seen_at=None)
        ).rowcount
        if changed:
            return token + 1
    if token == 0:  # a database not migrated by Alembic (tests): the row may be missing
        try:
            with db.connection() as conn:
                conn.execute(insert(_marks).values(id=1, token=1, sent_at=now, sent_depth=depth))
        except IntegrityError:
            return None
        return 1
    return None


def see_mark(db: Database, token: int) -> bool:
    """A worker took mark `token` out of the queue; False for an old or repeated mark."""
    with db.connection() as conn:
        return bool(
            conn.execute(
                update(_marks)
                .where(_marks.c.id == 1, _marks.c.token == token, _marks.c.seen_at.is_(None))
                .values(seen_at=utcnow())
            ).rowcount
        )


# --- repeated URLs ----------------------------------------------------------------------------


def settle_followers(db: Database, batch: int = SWEEP_BATCH) -> list[str]:
    """Give unfinished followers their source's final result; returns the requests touched.

    A source's result reaches its followers in the transaction that records it; this
    catches the rest: a source failed by the sweeper (out of attempts), or followers a
    retry put back to pending while their source stayed done.
    """
    source = _images.alias("source")
    copied = (*_RESULT_FIELDS, "finished_at")
    with db.connection() as conn:
        rows = conn.execute(
            select(_images.c.id, _images.c.request_id, *(source.c[name] for name in copied))
            .join(source, source.c.id == _images.c.source_image_id)
            .where(
                _images.c.source_image_id.is_not(None),
                _images.c.status.in_(st.UNFINISHED),
                source.c.status.not_in(st.UNFINISHED),
            )
            .limit(batch)
        ).all()
        for row in rows:
            conn.execute(
                update(_images)
                .where(_images.c.id == row.id, _images.c.status.in_(st.UNFINISHED))
                .values(lease_until=None, **{name: getattr(row, name) for name in copied})
            )
    return sorted({row.request_id for row in rows})
