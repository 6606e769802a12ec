"""A caller's requests, newest first, a page at a time: keyset pages on (created_at, id).

Why keyset and not OFFSET: a page is one index range scan whatever the table's size (no
count, no skipping over earlier rows), and a cursor names a position, not a row number, so
requests created between two pages never shift the next page (they are newer: they sort
before the cursor). Progress and savings come from the summary a request gets when it
finalizes (`summary_values`), so a page of finished 50,000-image requests reads 50 rows;
only unfinished requests (and ones finished before the summary existed) are counted live,
in one grouped query for the page.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy import Select, Table, and_, func, or_, select
from sqlalchemy.orm import Session

from . import statuses as st
from .engine import Database
from .models import Image, Request

_images = cast(Table, Image.__table__)
_requests = cast(Table, Request.__table__)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
CURSOR_PATTERN = r"^([0-9]{1,18})\.([A-Za-z0-9]{1,64})$"
_CURSOR = re.compile(CURSOR_PATTERN)


@dataclass(frozen=True)
class Listed:
    """One request as the history shows it."""

    request_id: str
    status: str
    created_at: datetime
    completed_at: datetime | None
    filename: str | None
    products: int
    images: int
    progress: st.Progress
    savings: st.Savings


@dataclass(frozen=True)
class Page:
    requests: list[Listed]
    next_cursor: str | None


def encode_cursor(created_at: datetime, request_id: str) -> str:
    """A position: after the request created at `created_at` (in microseconds since the
    epoch) with id `request_id`, as `<microseconds>.<id>`."""
    micros = (created_at.astimezone(UTC) - EPOCH) // timedelta(microseconds=1)
    return f"{micros}.{request_id}"


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """The position a cursor names; ValueError when it does not match `CURSOR_PATTERN`.

    Any matching cursor names a position, whether or not a request sits there (a time past
    the calendar's end is the calendar's end), so the public schema can say exactly which
    cursors are valid.
    """
    match = _CURSOR.fullmatch(cursor)
    if match is None:
        raise ValueError("not a cursor")
    try:
        created_at = EPOCH + timedelta(microseconds=int(match[1]))
    except OverflowError:
        created_at = datetime.max.replace(tzinfo=UTC)
    return created_at, match[2]


def list_requests(
    db: Database,
    *,
    owner: str | None,
    status: str | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> Page:
    """Requests newest first (`owner` None: everyone's, as an open API shows them).

    Deleted requests (and ones being deleted) are left out. Raises ValueError for a bad
    cursor.
    """
    query = page_query(owner=owner, status=status, limit=limit, cursor=cursor)
    with db.connection() as conn:
        rows = conn.execute(query).all()
        page, more = rows[:limit], len(rows) > limit
        live = _live_summaries(conn, [row.id for row in page if row.done_images is None])
    listed = [_listed(row, live.get(row.id)) for row in page]
    last = page[-1] if more else None
    return Page(listed, encode_cursor(last.created_at, last.id) if last is not None else None)


def page_query(
    *, owner: str | None, status: str | None, limit: int, cursor: str | None
) -> Select[Any]:
    """The one statement a page costs: an index range scan, `limit + 1` rows (the extra one
    says whether there is a next page)."""
    r = _requests.c
    query = select(_requests).where(r.deleted_at.is_(None))
    if owner is not None:
        query = query.where(r.owner == owner)
    if status is not None:
        query = query.where(r.status == status)
    else:  # an upload still being written in chunks is nobody's yet
        query = query.where(r.status != st.RECEIVING)
    if cursor is not None:
        created_at, request_id = decode_cursor(cursor)
        query = query.where(
            r.created_at <= created_at,
            or_(r.created_at < created_at, and_(r.created_at == created_at, r.id < request_id)),
        )
    return query.order_by(r.created_at.desc(), r.id.desc()).limit(limit + 1)


def _listed(row: Any, live: dict[str, Any] | None) -> Listed:
    if live is None:  # the summary written at finalization
        counts = {
            st.DONE: row.done_images or 0,
            st.FAILED: row.failed_images or 0,
            st.CANCELLED: row.cancelled_images or 0,
        }
        savings = st.Savings(counts[st.DONE], row.bytes_in or 0, row.bytes_out or 0)
    else:
        counts, savings = live["counts"], live["savings"]
    return Listed(
        request_id=row.id,
        status=row.status,
        created_at=row.created_at,
        completed_at=row.completed_at,
        filename=row.filename,
        products=row.product_count,
        images=row.image_count,
        progress=st.progress_from_counts(counts),
        savings=savings,
    )


def _live_summaries(conn: Any, request_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Counts by status and savings for requests without a summary, in one grouped query."""
    ids = list(request_ids)
    if not ids:
        return {}
    i = _images.c
    rows = conn.execute(
        select(i.request_id, i.status, func.count(), func.sum(i.bytes_in), func.sum(i.bytes_out))
        .where(i.request_id.in_(ids))
        .group_by(i.request_id, i.status)
    ).all()
    out: dict[str, dict[str, Any]] = {
        request_id: {"counts": {}, "savings": st.Savings()} for request_id in ids
    }
    for request_id, status, count, bytes_in, bytes_out in rows:
        out[request_id]["counts"][status] = count
        if status == st.DONE:
            out[request_id]["savings"] = st.Savings(count, int(bytes_in or 0), int(bytes_out or 0))
    return out


def summary_values(session: Session, request_id: str) -> dict[str, int]:
    """The summary a finalizing request stores: its images' end states and done bytes."""
    rows = session.execute(
        select(Image.status, func.count(), func.sum(Image.bytes_in), func.sum(Image.bytes_out))
        .where(Image.request_id == request_id)
        .group_by(Image.status)
    ).all()
    values = {
        "done_images": 0,
        "failed_images": 0,
        "cancelled_images": 0,
        "bytes_in": 0,
        "bytes_out": 0,
    }
    for status, count, bytes_in, bytes_out in rows:
        if status == st.DONE:
            values |= {"done_images": count, "bytes_in": bytes_in or 0, "bytes_out": bytes_out or 0}
        elif status == st.FAILED:
            values["failed_images"] = count
        elif status == st.CANCELLED:
            values["cancelled_images"] = count
    return values
