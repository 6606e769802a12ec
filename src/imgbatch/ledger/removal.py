"""Deleting a request: a tombstone first, then its images' rows batch by batch, then the rest.

Why in this order: the stored objects must go before the rows that name them, and a crash
anywhere must leave a request that can simply be deleted again, never rows pointing at
nothing that a client could still see. So:

1. `mark_deleted` — one conditional UPDATE sets `deleted_at` on a final request (the delete,
   or the retention sweep, that wins). From then on every route answers 404 for it, a retry
   can no longer win it (retry requires `deleted_at IS NULL`), and its webhook deliveries
   are removed so nothing more is sent about it.
2. `image_batch` / `delete_images` — the caller deletes a batch's objects, then its rows.
3. `delete_request_rows` — products in batches, then the request row itself.

`deleting_request_ids` finds tombstones whose removal stopped half-way; `expired_request_ids`
finds final requests past the retention period. Every statement is bounded.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import cast

from sqlalchemy import Table, delete, select, update

from . import statuses as st
from .clock import utcnow
from .engine import Database
from .models import Image, Product, Request, WebhookDelivery

IMAGE_BATCH = 1000  # images per batch: one storage DeleteObjects, one short DELETE
PRODUCT_BATCH = 5000

_images = cast(Table, Image.__table__)
_products = cast(Table, Product.__table__)
_requests = cast(Table, Request.__table__)
_deliveries = cast(Table, WebhookDelivery.__table__)


def mark_deleted(db: Database, request_id: str) -> str:
    """Tombstone a final request: `marked` for the one caller that set `deleted_at`,
    `deleting` when it was already tombstoned (its removal may continue), else
    `not_finished` or `not_found`."""
    now = utcnow()
    with db.connection() as conn:
        won = conn.execute(
            update(_requests)
            .where(
                _requests.c.id == request_id,
                _requests.c.status.in_(st.FINAL),
                _requests.c.deleted_at.is_(None),
            )
            .values(deleted_at=now, updated_at=now)
        ).rowcount
        if won:
            conn.execute(delete(_deliveries).where(_deliveries.c.request_id == request_id))
            return "marked"
        row = conn.execute(
            select(_requests.c.status, _requests.c.deleted_at).where(_requests.c.id == request_id)
        ).first()
    if row is None:
        return "not_found"
    return "deleting" if row.deleted_at is not None else "not_finished"


@dataclass(frozen=True)
class ImageBatch:
    """Some images of a tombstoned request: their ids, and the object keys they name."""

    ids: list[int]
    keys: list[str]


def image_batch(db: Database, request_id: str, limit: int | None = None) -> ImageBatch:
    """Up to `limit` (`IMAGE_BATCH`) remaining images of the request, in any order: each
    batch is deleted before the next is read."""
    with db.connection() as conn:
        rows = conn.execute(
            select(_images.c.id, _images.c.output_key)
            .where(_images.c.request_id == request_id)
            .limit(limit or IMAGE_BATCH)
        ).all()
    return ImageBatch(
        [row.id for row in rows], sorted({r.output_key for r in rows if r.output_key})
    )


def delete_images(db: Database, image_ids: list[int]) -> int:
    """Delete these image rows (after their objects); how many were still there."""
    if not image_ids:
        return 0
    with db.connection() as conn:
        return int(conn.execute(delete(_images).where(_images.c.id.in_(image_ids))).rowcount)


def delete_request_rows(db: Database, request_id: str) -> bool:
    """Delete the products (in batches) and then the request row; True if the row went now.

    Call it only once no image row is left (their objects are deleted first).
    """
    while True:
        with db.connection() as conn:
            batch = (
                select(_products.c.id)
                .where(_products.c.request_id == request_id)
                .limit(PRODUCT_BATCH)
                .scalar_subquery()
            )
            if not conn.execute(delete(_products).where(_products.c.id.in_(batch))).rowcount:
                break
    with db.connection() as conn:
        conn.execute(delete(_deliveries).where(_deliveries.c.request_id == request_id))
        gone = conn.execute(
            delete(_requests).where(
                _requests.c.id == request_id, _requests.c.deleted_at.is_not(None)
            )
        ).rowcount
    return bool(gone)


def deleting_request_ids(db: Database, deleted_before: datetime, limit: int = 100) -> list[str]:
    """Requests tombstoned before `deleted_before` and still in the ledger (their removal
    stopped half-way), oldest first."""
    with db.connection() as conn:
        rows = conn.execute(
            select(_requests.c.id)
            .where(_requests.c.deleted_at < deleted_before)
            .order_by(_requests.c.deleted_at)
            .limit(limit)
        )
        return [row.id for row in rows]


def expired_request_ids(db: Database, finished_before: datetime, limit: int = 20) -> list[str]:
    """Final requests that finished before `finished_before` and are not tombstoned yet."""
    with db.connection() as conn:
        rows = conn.execute(
            select(_requests.c.id)
            .where(
                _requests.c.completed_at < finished_before,
                _requests.c.status.in_(st.FINAL),
                _requests.c.deleted_at.is_(None),
            )
            .order_by(_requests.c.completed_at)
            .limit(limit)
        )
        return [row.id for row in rows]
