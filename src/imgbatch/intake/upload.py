"""Upload intake: validate a CSV (all or nothing), write the ledger in one transaction, then enqueue."""

from __future__ import annotations

import json
import logging
import time
import unicodedata
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from imgbatch.catalogue import CsvLimits, CsvRejected, ProductRow, parse_products
from imgbatch.context import Context
from imgbatch.errors import ApiError, ImageFailure, first_line
from imgbatch.fetching import check_webhook_url, url_key
from imgbatch.imaging import AUTO, MAX_SIDE, TARGETS
from imgbatch.ledger import (
    IdempotencyRecord,
    KeyTaken,
    abandon_request,
    add_products,
    begin_request,
    create_request,
    find_key,
    mark_enqueued,
    open_request,
    owner_backlog,
)
from imgbatch.ledger.statuses import PENDING
from imgbatch.webhooks import key_secret, new_secret

from .idempotency import UploadKey, replayed_body, upload_hash

log = logging.getLogger(__name__)

OUTPUT_FORMATS = TARGETS  # what imaging.compress can write


@dataclass(frozen=True)
class Accepted:
    request_id: str
    products: int
    images: int
    body: dict[str, Any] = field(default_factory=dict)  # the 202 answer
    replayed: bool = False  # an earlier upload's answer, for the same Idempotency-Key


def accepted_body(request_id: str, products: int, images: int) -> dict[str, Any]:
    """The `202` answer to an upload (stored with an idempotency key, replayed as it was)."""
    return {
        "request_id": request_id,
        "status": PENDING,
        "status_url": f"/api/status/{request_id}",
        "products": products,
        "images": images,
    }


def csv_limits(ctx: Context) -> CsvLimits:
    s = ctx.settings
    return CsvLimits(
        max_bytes=s.max_csv_bytes,
        max_rows=s.max_rows,
        max_urls_per_row=s.max_urls_per_row,
        max_url_length=s.max_url_length,
        max_cell_chars=s.max_cell_chars,
        max_columns=s.max_columns,
        max_images=s.max_images_per_request,
    )


def parse_quality(value: str | int | None, default: int | str) -> int | str:
    """1..100, or "auto" (the lowest quality that still meets the perceptual target)."""
    if value is None or value == "":
        return default
    if isinstance(value, str) and value.strip().lower() == AUTO:
        return AUTO
    text = str(value).strip()
    # ASCII digits only, as for the box sides: int() would also take "+50", "5_0" and Arabic-Indic digits
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= 100:
        raise ApiError(400, "bad_field", "quality must be an integer from 1 to 100, or auto")
    return int(text)


def parse_side(name: str, value: str | int | None, default: int | None) -> int | None:
    """`max_width` / `max_height`: a whole number of pixels, 1..MAX_SIDE; empty: the default."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return default
    text = str(value).strip()
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= MAX_SIDE:
        raise ApiError(400, "bad_field", f"{name} must be an integer from 1 to {MAX_SIDE}")
    return int(text)


def parse_format(value: str | None) -> str:
    fmt = (value or "keep").strip().lower()
    if fmt == "jpg":
        fmt = "jpeg"
    if fmt not in OUTPUT_FORMATS:
        raise ApiError(400, "bad_field", f"format must be one of {', '.join(OUTPUT_FORMATS)}")
    return fmt


def validate_webhook_url(ctx: Context, url: str | None) -> str | None:
    if url is None or not url.strip():
        return None
    url = url.strip()
    if len(url) > ctx.settings.max_url_length:
        raise ApiError(422, "bad_webhook_url", "webhook_url is too long")
    try:
        check_webhook_url(url, ctx.policy)
    except ImageFailure as failure:
        raise ApiError(422, "bad_webhook_url", f"webhook_url refused: {failure.message}") from None
    return url


# Images per ledger transaction for a large upload (`ledger.intake`): 0.03-0.3 s of
# SQLite's write lock each (100,000 images in one transaction held it for 3 s).
INTAKE_CHUNK_IMAGES = 5_000
# On SQLite, a pause between chunks: a writer waiting for the lock (another upload, a
# worker's claim) polls every 100 ms at most and would otherwise miss the moment between
# two chunks, again and again (a small upload waited 1 s without it).
SQLITE_CHUNK_PAUSE = 0.1


def _chunks(products: list[ProductRow], images: int) -> Iterator[tuple[int, list[ProductRow]]]:
    """(first position, products) with about `images` image URLs each."""
    start = count = 0
    for index, product in enumerate(products):
        count += len(product.urls)
        if count >= images:
            yield start, products[start : index + 1]
            start, count = index + 1, 0
    if start < len(products):
        yield start, products[start:]


def _write_in_chunks(
    ctx: Context, request_id: str, products: list[ProductRow], options: dict[str, Any]
) -> list[int]:
    """Write a large upload chunk by chunk under an invisible request, then open it at once."""
    image_count = sum(len(p.urls) for p in products)
    begin_request(
        ctx.db,
        request_id=request_id,
        product_count=len(products),
        image_count=image_count,
        **options,
    )
    image_ids: list[int] = []
    first_of: dict[str, int] = {}  # URL key -> its first image, across the chunks
    try:
        pause = SQLITE_CHUNK_PAUSE if ctx.db.url.startswith("sqlite") else 0.0
        for index, (first, chunk) in enumerate(_chunks(products, INTAKE_CHUNK_IMAGES)):
            if index and pause:
                time.sleep(pause)
            keys = [url_key(url) for product in chunk for url in product.urls]
            image_ids += add_products(ctx.db, request_id, chunk, first, keys, first_of)
        if not open_request(ctx.db, request_id):
            raise LookupError(f"request {request_id} was abandoned while it was written")
    except BaseException:
        try:
            abandon_request(ctx.db, request_id)  # the sweeper's removal deletes its rows
        except Exception:
            log.warning("could not abandon a failed intake", extra={"request_id": request_id})
        raise
    return image_ids


MAX_FILENAME = 255


def clean_filename(name: str | None) -> str | None:
    """The file name a client sent, fit to show: its last path segment (browsers on Windows
    once sent `C:\\dir\\file.csv`), control and bidi-override characters removed, spaces
    trimmed, at most 255 characters; None when nothing is left."""
    if not name:
        return None
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c for c in name if unicodedata.category(c) not in ("Cc", "Cf")).strip()
    return name[:MAX_FILENAME] or None


def accept_upload(
    ctx: Context,
    data: bytes,
    *,
    quality: int | str,
    output_format: str,
    webhook_url: str | None,
    owner: str | None,
    max_width: int | None = None,
    max_height: int | None = None,
    filename: str | None = None,
    idempotency: UploadKey | None = None,
) -> Accepted:
    """Parse and validate; on success write the ledger and enqueue the images as jobs.

    `filename` is the uploaded file's name as the client sent it (kept for the history,
    cleaned by `clean_filename`). With `idempotency`, an earlier upload with the same key
    answers instead (`intake.idempotency`), and this one stores its key and answer."""
    body_hash = ""
    if idempotency is not None:
        body_hash = upload_hash(
            data,
            {
                "quality": quality,
                "format": output_format,
                "webhook_url": webhook_url,
                "max_width": max_width,
                "max_height": max_height,
            },
        )
        stored = find_key(ctx.db, idempotency.scope, idempotency.key)
        if stored is not None:  # known already: no need to parse the CSV again
            return _replay(stored.request_id, replayed_body(stored, body_hash))
    try:
        products = parse_products(data, csv_limits(ctx))
    except CsvRejected as rejected:
        details = [
            {"row": issue.row, "column": issue.column, "message": issue.message}
            for issue in rejected.issues
        ]
        raise ApiError(rejected.status, rejected.code, rejected.message, details) from None
    request_id = uuid.uuid4().hex
    options: dict[str, Any] = {
        "quality": quality,
        "output_format": output_format,
        "webhook_url": webhook_url,
        "owner": owner,
        "max_width": max_width,
        "max_height": max_height,
        "filename": clean_filename(filename),
    }
    # A URL named at several positions is fetched once: the later ones follow the first.
    images = sum(len(p.urls) for p in products)
    body = accepted_body(request_id, len(products), images)
    if webhook_url is not None:  # its events are signed with the uploader's secret
        if owner is None:  # open mode: one for this upload, shown once, in this answer
            options["webhook_secret"] = body["webhook_secret"] = new_secret()
        else:  # the key's, read and rotated at /api/webhook-secret
            key_secret(ctx.db, owner)
    if idempotency is not None:
        options["idempotency"] = IdempotencyRecord(
            idempotency.scope, idempotency.key, body_hash, json.dumps(body)
        )
    try:
        if images <= INTAKE_CHUNK_IMAGES:
            keys = [url_key(url) for product in products for url in product.urls]
            image_ids = create_request(
                ctx.db, request_id=request_id, products=products, url_keys=keys, **options
            )
        else:
            image_ids = _write_in_chunks(ctx, request_id, products, options)
    except KeyTaken:  # a concurrent upload with this key committed first: its answer
        assert idempotency is not None
        stored = find_key(ctx.db, idempotency.scope, idempotency.key)
        if stored is None:  # and was deleted since: rare enough to ask for a retry
            raise ApiError(
                409,
                "idempotency_key_in_use",
                "another upload with this Idempotency-Key changed meanwhile; send it again",
            ) from None
        return _replay(stored.request_id, replayed_body(stored, body_hash))
    try:
        # Fair turns (`queue.fairness`): a key's request queues behind its own backlog.
        behind = owner_backlog(ctx.db, owner, request_id) if owner is not None else 0
        ctx.queue.enqueue(image_ids, behind=behind)
        mark_enqueued(ctx.db, request_id)
    except Exception as exc:
        # The ledger has the images as pending and the request not marked enqueued: the
        # next sweep enqueues them (and a request whose mark failed is only enqueued twice).
        log.warning(
            "enqueue failed (%s: %s); the sweeper will enqueue the request",
            type(exc).__name__,
            first_line(exc),
            extra={"request_id": request_id},
        )
    log.info(
        "request accepted: %d products, %d images, %d distinct URLs",
        len(products),
        images,
        len(image_ids),
        extra={"request_id": request_id},
    )
    return Accepted(request_id, len(products), images, body)


def _replay(request_id: str, body: dict[str, Any]) -> Accepted:
    log.info("upload replayed for its Idempotency-Key", extra={"request_id": request_id})
    return Accepted(
        request_id, int(body.get("products", 0)), int(body.get("images", 0)), body, True
    )
