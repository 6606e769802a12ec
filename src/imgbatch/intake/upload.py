"""Upload intake: validate a CSV (all or nothing), write the ledger in one transaction, then enqueue."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

from imgbatch.catalogue import CsvLimits, CsvRejected, parse_products
from imgbatch.context import Context
from imgbatch.errors import ApiError, ImageFailure, first_line
from imgbatch.fetching import check_webhook_url, url_key
from imgbatch.imaging import AUTO, MAX_SIDE, TARGETS
from imgbatch.ledger import create_request, mark_enqueued

log = logging.getLogger(__name__)

OUTPUT_FORMATS = TARGETS  # what imaging.compress can write


@dataclass(frozen=True)
class Accepted:
    request_id: str
    products: int
    images: int


def csv_limits(ctx: Context) -> CsvLimits:
    s = ctx.settings
    return CsvLimits(
        max_bytes=s.max_csv_bytes,
        max_rows=s.max_rows,
        max_urls_per_row=s.max_urls_per_row,
        max_url_length=s.max_url_length,
        max_cell_chars=s.max_cell_chars,
        max_columns=s.max_columns,
    )


def parse_quality(value: str | int | None, default: int | str) -> int | str:
    """1..100, or "auto" (the lowest quality that still meets the perceptual target)."""
    if value is None or value == "":
        return default
    if isinstance(value, str) and value.strip().lower() == AUTO:
        return AUTO
    try:
        quality = int(value)
    except (TypeError, ValueError):
        raise ApiError(
            400, "bad_field", "quality must be an integer from 1 to 100, or auto"
        ) from None
    if not 1 <= quality <= 100:
        raise ApiError(400, "bad_field", "quality must be an integer from 1 to 100, or auto")
    return quality


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
) -> Accepted:
    """Parse and validate; on success write the ledger and enqueue the images as jobs."""
    try:
        products = parse_products(data, csv_limits(ctx))
    except CsvRejected as rejected:
        details = [
            {"row": issue.row, "column": issue.column, "message": issue.message}
            for issue in rejected.issues
        ]
        raise ApiError(rejected.status, rejected.code, rejected.message, details) from None
    request_id = uuid.uuid4().hex
    # A URL named at several positions is fetched once: the later ones follow the first.
    keys = [url_key(url) for product in products for url in product.urls]
    image_ids = create_request(
        ctx.db,
        request_id=request_id,
        products=products,
        quality=quality,
        output_format=output_format,
        webhook_url=webhook_url,
        owner=owner,
        max_width=max_width,
        max_height=max_height,
        url_keys=keys,
    )
    try:
        ctx.queue.enqueue(image_ids)
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
        len(keys),
        len(image_ids),
        extra={"request_id": request_id},
    )
    return Accepted(request_id, len(products), len(keys))
