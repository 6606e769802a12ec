"""Writing an upload into the ledger: in one transaction, or in chunks while it stays invisible.

A small upload is one transaction (`create_request`). A large one would hold SQLite's
write lock for seconds (100,000 images: about 3 s, while every other upload and every
worker's claim waited), so it is written in chunks of a few thousand images, each its
own short transaction, under a request whose status is `receiving`:

1. `begin_request` — the request row, `receiving`: every route answers 404 for it, no
   sweep enqueues it, and it cannot be finalized (only `pending`/`processing` can).
2. `add_products` — a chunk of products and their images; it also touches the request's
   `updated_at`, the heartbeat by which a stalled intake is told from a slow one.
3. `open_request` — one conditional UPDATE makes it `pending`: all or nothing, as before.

An intake that fails is tombstoned (`abandon_request`, `deleted_at`), and one whose process
died is found by the sweeper (`stalled_intakes`); the removal that deletes requests then
removes its rows, batch by batch.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, bindparam, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from imgbatch.catalogue import ProductRow
from imgbatch.ledger import statuses as st

from .clock import utcnow
from .engine import Database
from .idempotency import IdempotencyRecord, KeyTaken, insert_key, is_key_conflict
from .models import Image, Product, Request
from .operations import AUTO, AUTO_FALLBACK

_images = cast(Table, Image.__table__)
_products = cast(Table, Product.__table__)
_requests = cast(Table, Request.__table__)
_MOST_PARAMETERS = 10_000  # bound parameters in one statement, well under SQLite's 32,766


def _request_row(
    request_id: str,
    status: str,
    now: datetime,
    *,
    quality: int | str,
    output_format: str,
    webhook_url: str | None,
    owner: str | None,
    max_width: int | None,
    max_height: int | None,
    product_count: int,
    image_count: int,
    filename: str | None = None,
    webhook_secret: str | None = None,
) -> Request:
    auto = quality == AUTO
    return Request(
        webhook_secret=webhook_secret,
        id=request_id,
        status=status,
        enqueued=False,  # until the upload's jobs are in the queue
        owner=owner,
        quality=AUTO_FALLBACK if auto else int(quality),
        auto_quality=auto,
        output_format=output_format,
        max_width=max_width,
        max_height=max_height,
        filename=filename,
        webhook_url=webhook_url,
        product_count=product_count,
        image_count=image_count,
        created_at=now,
        updated_at=now,
    )


def _insert_products(
    session: Session,
    request_id: str,
    products: Sequence[ProductRow],
    first_position: int,
    now: datetime,
) -> list[int]:
    """Insert products (positions from `first_position`) and their images; their image ids,
    in input order."""
    # Plain executemany (no RETURNING): SQLite would need one statement per row to
    # return ids in order, so ids are read back with one SELECT per table instead.
    session.execute(
        insert(_products),
        [
            {
                "request_id": request_id,
                "position": position,
                "row": p.row,
                "serial_number": p.serial_number,
                "name": p.product_name,
            }
            for position, p in enumerate(products, start=first_position)
        ],
    )
    positions = (first_position, first_position + len(products) - 1)
    product_ids = (
        session.execute(
            select(Product.id)
            .where(Product.request_id == request_id, Product.position.between(*positions))
            .order_by(Product.position)
        )
        .scalars()
        .all()
    )
    session.execute(
        insert(_images),
        [
            {
                "request_id": request_id,
                "product_id": product_id,
                "position": position,
                "input_url": url,
                "status": st.PENDING,
                "attempts": 0,
                "enqueued_at": now,
            }
            for product_id, product in zip(product_ids, products, strict=True)
            for position, url in enumerate(product.urls)
        ],
    )
    if first_position == 0 and len(product_ids) > _MOST_PARAMETERS:  # one transaction
        where = Image.request_id == request_id
    else:  # a chunk: read through the (product_id, position) index, not the whole request
        where = Image.product_id.in_(product_ids)
    return list(
        session.execute(
            select(Image.id).where(where).order_by(Image.product_id, Image.position)
        ).scalars()
    )


def create_request(
    db: Database,
    *,
    request_id: str,
    products: Sequence[ProductRow],
    quality: int | str,
    output_format: str,
    webhook_url: str | None,
    owner: str | None,
    max_width: int | None = None,
    max_height: int | None = None,
    url_keys: Sequence[str] | None = None,
    filename: str | None = None,
    idempotency: IdempotencyRecord | None = None,
    webhook_secret: str | None = None,
) -> list[int]:
    """Write a request with its products and images in one transaction; return the ids to process.

    `quality` is 1..100 or "auto" (stored as `auto_quality`, with `AUTO_FALLBACK` in
    `quality` so that a worker that predates auto still compresses sensibly).
    `url_keys`, one per image in order (`fetching.url_key`), turn on the dedupe: a later
    position whose key an earlier one has follows it (`source_image_id`) and is left out of
    the returned ids, to be settled by its source's result instead of fetched again.
    `idempotency` stores the upload's key in the same transaction: `KeyTaken` (and nothing
    written) when another upload holds it.
    """
    now = utcnow()
    with _key_taken_as_such(), db.session() as session:
        session.add(
            _request_row(
                request_id,
                st.PENDING,
                now,
                quality=quality,
                output_format=output_format,
                webhook_url=webhook_url,
                owner=owner,
                max_width=max_width,
                max_height=max_height,
                filename=filename,
                webhook_secret=webhook_secret,
                product_count=len(products),
                image_count=sum(len(p.urls) for p in products),
            )
        )
        session.flush()
        if idempotency is not None:  # before the rows: a second upload stops here
            insert_key(session, idempotency, request_id)
        image_ids = _insert_products(session, request_id, products, 0, now)
        if url_keys is not None:
            image_ids = _link_duplicates(session, image_ids, url_keys, {})
        return image_ids


@contextlib.contextmanager
def _key_taken_as_such() -> Iterator[None]:
    """An idempotency key's unique violation becomes `KeyTaken` (after the rollback)."""
    try:
        yield
    except IntegrityError as exc:
        if is_key_conflict(exc):
            raise KeyTaken from None
        raise


def _link_duplicates(
    session: Session, image_ids: list[int], url_keys: Sequence[str], first: dict[str, int]
) -> list[int]:
    """Point each repeated URL's later positions at its first one; return the first ones.

    `first` maps a URL key to the image that has it first, across the chunks of a request
    (updated here), so a URL repeated in a later chunk follows its first position too.
    """
    if len(url_keys) != len(image_ids):
        raise ValueError(f"{len(url_keys)} URL keys for {len(image_ids)} images")
    followers: dict[int, int] = {}
    links: list[dict[str, int]] = []
    fresh: list[int] = []
    for image_id, key in zip(image_ids, url_keys, strict=True):
        source = first.setdefault(key, image_id)
        if source == image_id:
            fresh.append(image_id)
        else:
            links.append({"image_id": image_id, "source": source})
            followers[source] = followers.get(source, 0) + 1
    if not links:
        return image_ids
    session.execute(
        update(_images)
        .where(_images.c.id == bindparam("image_id"))
        .values(source_image_id=bindparam("source")),
        links,
    )
    session.execute(
        update(_images)
        .where(_images.c.id == bindparam("image_id"))
        .values(followers=_images.c.followers + bindparam("count")),
        [{"image_id": i, "count": n} for i, n in followers.items()],
    )
    return fresh


def begin_request(
    db: Database,
    *,
    request_id: str,
    idempotency: IdempotencyRecord | None = None,
    **options: Any,
) -> None:
    """Create the request as `receiving` (invisible); `options` as for `create_request`,
    plus `product_count` and `image_count`; `idempotency` as there."""
    with _key_taken_as_such(), db.session() as session:
        session.add(_request_row(request_id, st.RECEIVING, utcnow(), **options))
        if idempotency is not None:
            session.flush()
            insert_key(session, idempotency, request_id)


def add_products(
    db: Database,
    request_id: str,
    products: Sequence[ProductRow],
    first_position: int,
    url_keys: Sequence[str] | None = None,
    first: dict[str, int] | None = None,
) -> list[int]:
    """Add a chunk of a `receiving` request's products, in its own transaction; the ids to
    process. With `url_keys` (this chunk's), repeated URLs follow their first position in
    the whole request: `first` carries the first positions from chunk to chunk."""
    now = utcnow()
    with db.session() as session:
        alive = session.execute(
            update(_requests)
            .where(
                _requests.c.id == request_id,
                _requests.c.status == st.RECEIVING,
                _requests.c.deleted_at.is_(None),
            )
            .values(updated_at=now)
        ).rowcount  # type: ignore[attr-defined]
        if not alive:
            raise LookupError(f"request {request_id} is no longer being received")
        image_ids = _insert_products(session, request_id, products, first_position, now)
        if url_keys is not None:
            image_ids = _link_duplicates(
                session, image_ids, url_keys, first if first is not None else {}
            )
        return image_ids


def open_request(db: Database, request_id: str) -> bool:
    """Make a fully written request `pending` (visible, claimable); False if it was abandoned."""
    now = utcnow()
    with db.connection() as conn:
        won = conn.execute(
            update(_requests)
            .where(
                _requests.c.id == request_id,
                _requests.c.status == st.RECEIVING,
                _requests.c.deleted_at.is_(None),
            )
            .values(status=st.PENDING, created_at=now, updated_at=now)
        ).rowcount
    return bool(won)


def abandon_request(db: Database, request_id: str) -> bool:
    """Tombstone a request still `receiving`, for the removal to delete its rows."""
    now = utcnow()
    with db.connection() as conn:
        won = conn.execute(
            update(_requests)
            .where(
                _requests.c.id == request_id,
                _requests.c.status == st.RECEIVING,
                _requests.c.deleted_at.is_(None),
            )
            .values(deleted_at=now, updated_at=now)
        ).rowcount
    return bool(won)


def stalled_intakes(db: Database, quiet_since: datetime, limit: int = 100) -> list[str]:
    """Requests still `receiving` with no chunk written since `quiet_since` (their API died)."""
    with db.connection() as conn:
        return list(
            conn.execute(
                select(_requests.c.id)
                .where(
                    _requests.c.status == st.RECEIVING,
                    _requests.c.deleted_at.is_(None),
                    _requests.c.updated_at < quiet_since,
                )
                .limit(limit)
            ).scalars()
        )


def owner_backlog(db: Database, owner: str, excluding: str) -> int:
    """Images of the key's other requests still waiting or in work (repeats of a URL, which
    are never fetched, not counted): its new request queues behind them (`queue.fairness`)."""
    with db.connection() as conn:
        count = conn.execute(
            select(func.count())
            .select_from(_images.join(_requests, _requests.c.id == _images.c.request_id))
            .where(
                _requests.c.owner == owner,
                _requests.c.status.in_(st.UNFINISHED),
                _requests.c.id != excluding,
                _images.c.status.in_(st.UNFINISHED),
                _images.c.source_image_id.is_(None),
            )
        ).scalar_one()
    return int(count)
