"""Ledger operations: every state change is a conditional update, so it is safe to repeat.

- An image is claimed by moving it from `pending` (or `processing` with an
  expired lease) to `processing` with a new lease; a job whose claim fails is
  a no-op, so duplicate and replayed jobs are harmless.
- A result is recorded only by the holder of the current claim (`attempts`
  is the claim token).
- A request is finalized by one conditional UPDATE that succeeds only when no
  image is unfinished and the request is not final yet; exactly one caller wins
  and runs the `on_finalized` hook in the same transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from typing import cast

from sqlalchemy import Table, and_, bindparam, case, exists, func, or_, select, update
from sqlalchemy.orm import Session

from imgbatch.ledger import statuses as st

from .clock import utcnow
from .engine import Database
from .history import summary_values
from .models import Image, Product, Request, UTCDateTime
from .transient import retry_deadlocks

AUTO = "auto"  # the quality that asks for the search (`imgbatch.imaging.autoquality`)
AUTO_FALLBACK = 50


@dataclass(frozen=True)
class ImageResult:
    """What processing one image produced: the fields a worker writes on its row."""

    status: str
    error_code: str | None = None
    error_message: str | None = None
    output_key: str | None = None
    output_url: str | None = None
    output_format: str | None = None
    bytes_in: int | None = None
    bytes_out: int | None = None
    width: int | None = None
    height: int | None = None
    kept_original: bool | None = None
    quality: int | None = None  # the quality encoded with; None: lossless or kept as it was

    @classmethod
    def failed(cls, code: str, message: str) -> ImageResult:
        return cls(status=st.FAILED, error_code=code, error_message=message[:2000])


@dataclass(frozen=True)
class ClaimedImage:
    """What a worker needs to process one image, read in the claiming transaction."""

    id: int
    request_id: str
    input_url: str
    serial_number: int
    product_position: int
    position: int
    quality: int | str  # 1..100 or "auto"
    output_format: str
    attempt: int
    max_width: int | None = None
    max_height: int | None = None
    # The image's streak of backend faults, if an earlier claim was given back.
    fault_kind: str | None = None
    fault_since: datetime | None = None
    # Later positions of the request naming the same URL: they take this image's result.
    followers: int = 0


# The worker's statements are built once: a worker runs them for every job, and
# building SQLAlchemy expressions costs more CPU than SQLite takes to run them.
_images = cast(Table, Image.__table__)
_products = cast(Table, Product.__table__)
_requests = cast(Table, Request.__table__)
_now = bindparam("now", type_=UTCDateTime())

_CLAIMABLE = and_(
    _images.c.id.in_(bindparam("image_ids", expanding=True)),
    or_(
        _images.c.status == st.PENDING,
        and_(_images.c.status == st.PROCESSING, _images.c.lease_until < _now),
    ),
    _images.c.attempts < bindparam("max_attempts"),
    # released by a backend's fault: not before its delay ran out
    or_(_images.c.retry_at.is_(None), _images.c.retry_at <= _now),
    # a repeated URL's later position is never fetched: its source's result settles it
    _images.c.source_image_id.is_(None),
    # a cancel is accepted before its batches reach every image: none starts meanwhile
    ~exists().where(_requests.c.id == _images.c.request_id, _requests.c.cancelled_at.is_not(None)),
)
_CLAIM = (
    update(_images)
    .where(
        # Rows are locked in id order, and on PostgreSQL a row another transaction holds
        # (a sweep, a duplicate job's claim) is skipped rather than waited for, so a claim
        # never takes part in a deadlock. SQLite has no row locks and ignores the clause.
        _images.c.id.in_(
            select(_images.c.id)
            .where(_CLAIMABLE)
            .order_by(_images.c.id)
            .with_for_update(skip_locked=True)
            .scalar_subquery()
        ),
        _CLAIMABLE,
    )
    .values(
        status=st.PROCESSING,
        attempts=_images.c.attempts + 1,
        lease_until=bindparam("lease_until", type_=UTCDateTime()),
        started_at=_now,
    )
    .returning(
        _images.c.id,
        _images.c.request_id,
        _images.c.attempts,
        _images.c.input_url,
        _images.c.position,
        _images.c.product_id,
        _images.c.fault_kind,
        _images.c.fault_since,
        _images.c.followers,
    )
)
_CLAIM_CONTEXT = (
    select(
        _products.c.id,
        _products.c.serial_number,
        _products.c.position,
        _requests.c.id.label("request_id"),
        _requests.c.quality,
        _requests.c.auto_quality,
        _requests.c.output_format,
        _requests.c.max_width,
        _requests.c.max_height,
        _requests.c.status,
    )
    .join(_requests, _requests.c.id == _products.c.request_id)
    .where(_products.c.id.in_(bindparam("product_ids", expanding=True)))
)
_START_REQUEST = (
    update(_requests)
    .where(_requests.c.id == bindparam("request_id"), _requests.c.status == st.PENDING)
    .values(status=st.PROCESSING, updated_at=_now)
)
_OUR_CLAIM = and_(
    _images.c.id == bindparam("image_id"),
    _images.c.status == st.PROCESSING,
    _images.c.attempts == bindparam("attempt"),
)
_RENEW = (
    update(_images)
    .where(_OUR_CLAIM)
    .values(lease_until=bindparam("lease_until", type_=UTCDateTime()))
)
_RELEASE = (
    update(_images)
    .where(_OUR_CLAIM)
    .values(
        status=st.PENDING,
        attempts=_images.c.attempts - 1,
        lease_until=None,
        started_at=None,
        enqueued_at=_now,
    )
)
_RESULT_FIELDS = tuple(f.name for f in fields(ImageResult))
_RECORD = (
    update(_images)
    .where(_OUR_CLAIM)
    .values(
        lease_until=None,
        finished_at=_now,
        **{name: bindparam(f"v_{name}") for name in _RESULT_FIELDS},
    )
)
# The same result for the positions that repeat a recorded image's URL (still unfinished:
# a cancelled one stays cancelled).
_SETTLE_FOLLOWERS = (
    update(_images)
    .where(
        _images.c.source_image_id == bindparam("image_id"),
        _images.c.status.in_(st.UNFINISHED),
    )
    .values(
        lease_until=None,
        finished_at=_now,
        **{name: bindparam(f"v_{name}") for name in _RESULT_FIELDS},
    )
)
_RECORDED = select(_images.c.id, _images.c.attempts, _images.c.finished_at).where(
    _images.c.id.in_(bindparam("image_ids", expanding=True))
)
_ANY_UNFINISHED = select(
    exists().where(
        _images.c.request_id == bindparam("request_id"), _images.c.status.in_(st.UNFINISHED)
    )
)


@retry_deadlocks
def claim_images(
    db: Database, image_ids: Sequence[int], lease_seconds: float, max_attempts: int = 5
) -> list[ClaimedImage]:
    """Take the images for processing, in the order given, in one transaction.

    An image is left out when it is done, leased by another worker, or has used up
    its attempts (the sweeper then fails it).
    """
    if not image_ids:
        return []
    now = utcnow()
    with db.connection() as conn:
        rows = conn.execute(
            _CLAIM,
            {
                "image_ids": list(image_ids),
                "now": now,
                "max_attempts": max_attempts,
                "lease_until": now + timedelta(seconds=lease_seconds),
            },
        ).all()
        if not rows:
            return []
        contexts = {
            c.id: c
            for c in conn.execute(
                _CLAIM_CONTEXT, {"product_ids": list({r.product_id for r in rows})}
            )
        }
        # Request rows in one order too: two claims starting two requests never cross.
        for request_id in sorted(
            {c.request_id for c in contexts.values() if c.status == st.PENDING}
        ):
            conn.execute(_START_REQUEST, {"request_id": request_id, "now": now})
    order = {image_id: i for i, image_id in enumerate(image_ids)}
    return [
        ClaimedImage(
            id=row.id,
            request_id=row.request_id,
            input_url=row.input_url,
            position=row.position,
            serial_number=contexts[row.product_id].serial_number,
            product_position=contexts[row.product_id].position,
            quality=AUTO
            if contexts[row.product_id].auto_quality
            else contexts[row.product_id].quality,
            output_format=contexts[row.product_id].output_format,
            attempt=row.attempts,
            max_width=contexts[row.product_id].max_width,
            max_height=contexts[row.product_id].max_height,
            fault_kind=row.fault_kind,
            fault_since=row.fault_since,
            followers=row.followers or 0,
        )
        for row in sorted(rows, key=lambda r: order[r.id])
    ]


@retry_deadlocks
def renew_leases(
    db: Database, claimed: Sequence[ClaimedImage], lease_seconds: float
) -> list[ClaimedImage]:
    """Extend our claims before a long step; returns those still ours (the rest were lost)."""
    until = utcnow() + timedelta(seconds=lease_seconds)
    kept = []
    with db.connection() as conn:
        for image in sorted(claimed, key=lambda c: c.id):  # one lock order for all writers
            params = {"image_id": image.id, "attempt": image.attempt, "lease_until": until}
            if conn.execute(_RENEW, params).rowcount:
                kept.append(image)
    return kept


@retry_deadlocks
def release_claims(db: Database, claimed: Sequence[ClaimedImage]) -> list[int]:
    """Give claimed images back to `pending` unprocessed, their attempt undone; the ids
    released (those whose claim was still ours). For a job whose process must end."""
    released = []
    now = utcnow()
    with db.connection() as conn:
        for image in sorted(claimed, key=lambda c: c.id):  # one lock order for all writers
            params = {"image_id": image.id, "attempt": image.attempt, "now": now}
            if conn.execute(_RELEASE, params).rowcount:
                released.append(image.id)
    return released


@dataclass(frozen=True)
class Recorded:
    """The outcome of recording a result."""

    ours: bool  # False: our claim was lost and another worker owns the image now
    maybe_last: bool  # no image of the request was unfinished right after ours


@retry_deadlocks
def record_results(
    db: Database, results: Sequence[tuple[ClaimedImage, ImageResult]]
) -> list[Recorded]:
    """Record finished images in one transaction, each only while we hold its claim.

    `maybe_last` tells the caller to try finalizing the image's request. It is read
    after the commit: inside the transaction, two workers recording a request's last
    images at once (PostgreSQL, READ COMMITTED) would each still see the other's as
    unfinished, and neither would finalize.
    """
    if not results:
        return []
    now = utcnow()
    params = [
        {
            **{f"v_{name}": getattr(result, name) for name in _RESULT_FIELDS},
            "image_id": claimed.id,
            "attempt": claimed.attempt,
            "now": now,
        }
        for claimed, result in results
    ]
    params.sort(key=lambda p: p["image_id"])  # rows locked in one order by every writer
    with db.connection() as conn:
        # One executemany: its total row count tells whether every claim was still ours.
        if conn.execute(_RECORD, params).rowcount == len(params):
            ours = [True] * len(results)
        else:  # a claim was lost: ours are the rows that now carry our attempt and our
            # timestamp (only the claim holder has that attempt; the sweeper's differs)
            rows = conn.execute(_RECORDED, {"image_ids": [c.id for c, _ in results]})
            mine = {(row.id, row.attempts) for row in rows if row.finished_at == now}
            ours = [(claimed.id, claimed.attempt) in mine for claimed, _ in results]
        # In the same transaction: a request is never seen finished with a follower pending.
        sources = {c.id for (c, _), mine in zip(results, ours, strict=True) if mine and c.followers}
        settle = [p for p in params if p["image_id"] in sources]
        if settle:
            conn.execute(_SETTLE_FOLLOWERS, settle)
    touched = {c.request_id for (c, _), mine in zip(results, ours, strict=True) if mine}
    finished = set()
    if touched:
        with db.connection() as conn:
            for request_id in touched:
                if not conn.execute(_ANY_UNFINISHED, {"request_id": request_id}).scalar():
                    finished.add(request_id)
    return [
        Recorded(ours=mine, maybe_last=mine and claimed.request_id in finished)
        for (claimed, _), mine in zip(results, ours, strict=True)
    ]


FinalizeHook = Callable[[Session, Request], None]


@retry_deadlocks
def finalize_request(
    db: Database, request_id: str, on_finalized: FinalizeHook | None = None
) -> str | None:
    """Move the request to its final status if every image is finished; exactly one caller wins.

    Returns the final status when this call finalized the request, else None. The status
    follows `statuses.final_status`: `cancelled` when a cancel was accepted (or any image
    was cancelled), else from the done and failed counts.
    """
    now = utcnow()
    unfinished = exists().where(Image.request_id == request_id, Image.status.in_(st.UNFINISHED))
    cancelled = exists().where(Image.request_id == request_id, Image.status == st.CANCELLED)
    failed = (
        select(func.count())
        .select_from(Image)
        .where(Image.request_id == request_id, Image.status == st.FAILED)
        .scalar_subquery()
    )
    done = (
        select(func.count())
        .select_from(Image)
        .where(Image.request_id == request_id, Image.status == st.DONE)
        .scalar_subquery()
    )
    final_status = case(
        (or_(Request.cancelled_at.is_not(None), cancelled), st.CANCELLED),
        (failed == 0, st.COMPLETED),
        (done == 0, st.FAILED),
        else_=st.COMPLETED_WITH_ERRORS,
    )
    with db.session() as session:
        # A read first: most calls find unfinished images, and under SQLite even an
        # UPDATE that matches nothing would take the database's write lock.
        if session.execute(select(unfinished)).scalar():
            return None
        won = session.execute(
            update(Request)
            .where(Request.id == request_id, Request.status.in_(st.UNFINISHED), ~unfinished)
            .values(status=final_status, completed_at=now, updated_at=now)
            .returning(Request.status)
        ).first()
        if won is None:
            return None
        # What it came to, for history pages (final images no longer change: a retry
        # needs this row, and waits for this transaction).
        session.execute(
            update(Request)
            .where(Request.id == request_id)
            .values(**summary_values(session, request_id))
        )
        if on_finalized is not None:
            request = session.get(Request, request_id)
            assert request is not None
            on_finalized(session, request)
        return str(won[0])


def image_counts(session: Session, request_id: str) -> dict[str, int]:
    rows = session.execute(
        select(Image.status, func.count())
        .where(Image.request_id == request_id)
        .group_by(Image.status)
    ).all()
    return {status: count for status, count in rows}


def image_savings(session: Session, request_id: str) -> st.Savings:
    """Bytes in and out over the request's done images (one aggregate on the status index)."""
    row = session.execute(
        select(func.count(), func.sum(Image.bytes_in), func.sum(Image.bytes_out)).where(
            Image.request_id == request_id, Image.status == st.DONE
        )
    ).one()
    return st.Savings(images=row[0], bytes_in=int(row[1] or 0), bytes_out=int(row[2] or 0))


def last_image_change(session: Session, request_id: str) -> datetime | None:
    """When an image of the request last finished (served by an index, rows untouched)."""
    return session.execute(
        select(func.max(Image.finished_at)).where(
            Image.request_id == request_id, Image.status.in_((st.DONE, st.FAILED))
        )
    ).scalar()


def unfinalized_request_ids(db: Database) -> list[str]:
    """Requests not final although no image is unfinished (a finalizer died mid-way)."""
    with db.session() as session:
        unfinished = exists().where(Image.request_id == Request.id, Image.status.in_(st.UNFINISHED))
        return list(
            session.execute(
                select(Request.id).where(Request.status.in_(st.UNFINISHED), ~unfinished)
            ).scalars()
        )
