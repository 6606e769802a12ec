"""Read models: the status document and the output CSV rows, straight from the ledger."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from sqlalchemy import select

from imgbatch import ledger
from imgbatch.catalogue import ImageRow, OutputRow
from imgbatch.context import Context
from imgbatch.errors import ApiError
from imgbatch.ledger import Image, Product, Request, isoformat
from imgbatch.ledger import statuses as st
from imgbatch.webhooks import webhook_summary

PAGE = 1000  # products read per query when streaming the output CSV


def get_request(
    ctx: Context, request_id: str, owner: str | None, *, deleting: bool = False
) -> Request:
    """The request, or a 404 — also when it belongs to another API key (ids cannot be probed),
    and once it is being deleted (unless `deleting`: a delete may take one up again)."""
    # Ids are uuid4 hex; anything else (a NUL byte would make PostgreSQL fail) is unknown.
    if len(request_id) > 64 or not (request_id.isascii() and request_id.isalnum()):
        raise ApiError(404, "not_found", "no such request")
    with ctx.db.session() as session:
        request = session.get(Request, request_id)
    if request is None or (owner is not None and request.owner != owner):
        raise ApiError(404, "not_found", "no such request")
    if request.status == st.RECEIVING:  # a large upload still being written
        raise ApiError(404, "not_found", "no such request")
    if request.deleted_at is not None and not deleting:
        raise ApiError(404, "not_found", "no such request")
    return request


def _products_page(
    ctx: Context, request_id: str, start: int, limit: int
) -> list[tuple[Any, list[Any]]]:
    """Products with positions [start, start + limit) and their images, in input order.

    Positions are the input order 0..n-1, so paging is an index range, never an OFFSET scan;
    only the columns the read models need are loaded.
    """
    with ctx.db.session() as session:
        products = session.execute(
            select(Product.id, Product.serial_number, Product.name)
            .where(
                Product.request_id == request_id,
                Product.position >= start,
                Product.position < start + limit,
            )
            .order_by(Product.position)
        ).all()
        if not products:
            return []
        images = session.execute(
            select(
                Image.product_id,
                Image.position,
                Image.input_url,
                Image.status,
                Image.output_url,
                Image.error_code,
                Image.error_message,
                Image.output_format,
                Image.width,
                Image.height,
                Image.bytes_in,
                Image.bytes_out,
                Image.quality,
            )
            .where(Image.product_id.in_([p.id for p in products]))
            .order_by(Image.product_id, Image.position)
        ).all()
    by_product: dict[int, list[Any]] = {p.id: [] for p in products}
    for image in images:
        by_product[image.product_id].append(image)
    return [(p, by_product[p.id]) for p in products]


def image_document(image: Any) -> dict[str, Any]:
    """One image's facts for the status document; the outcome fields are null until done."""
    done = image.status == st.DONE
    failed = image.status == st.FAILED
    return {
        "input_url": image.input_url,
        "output_url": image.output_url if done else None,
        "status": image.status,
        "format": image.output_format if done else None,
        "width": image.width if done else None,
        "height": image.height if done else None,
        "bytes_in": image.bytes_in if done else None,
        "bytes_out": image.bytes_out if done else None,
        "quality": image.quality if done else None,
        "error": {"code": image.error_code, "message": image.error_message} if failed else None,
    }


def request_options(request: Request) -> dict[str, Any]:
    """The options the request was made with (`quality` an integer or "auto")."""
    return {
        "quality": ledger.AUTO if request.auto_quality else request.quality,
        "format": request.output_format,
        "max_width": request.max_width,
        "max_height": request.max_height,
    }


def status_document(
    ctx: Context, request: Request, offset: int = 0, limit: int = 1000
) -> dict[str, Any]:
    with ctx.db.session() as session:
        counts = ledger.image_counts(session, request.id)
        savings = ledger.image_savings(session, request.id)
        last_change = ledger.last_image_change(session, request.id)
        webhook = webhook_summary(session, request, ctx.settings.webhook_url)
    # The request row is written only at start and end; progress moves with its images.
    updated_at = max(filter(None, (request.updated_at, last_change)))
    progress = st.progress_from_counts(counts)
    products = []
    for product, images in _products_page(ctx, request.id, offset, limit):
        products.append(
            {
                "serial_number": product.serial_number,
                "product_name": product.name,
                "status": st.derive_status(i.status for i in images),
                "input_urls": [i.input_url for i in images],
                "output_urls": [i.output_url if i.status == st.DONE else None for i in images],
                "errors": [
                    {
                        "input_url": i.input_url,
                        "position": i.position,
                        "code": i.error_code,
                        "message": i.error_message,
                    }
                    for i in images
                    if i.status == st.FAILED
                ],
                "images": [image_document(i) for i in images],
            }
        )
    finished = request.status in st.FINAL
    base = ctx.settings.resolved_public_base_url
    return {
        "request_id": request.id,
        "status": request.status,
        "filename": request.filename,  # as in the history: the page and the CLI name it so
        "created_at": isoformat(request.created_at),
        "updated_at": isoformat(updated_at),
        "completed_at": isoformat(request.completed_at),
        "progress": progress.as_dict(),
        "savings": savings.as_dict(),
        "options": request_options(request),
        "products_total": request.product_count,
        "offset": offset,
        "limit": limit,
        "next_offset": offset + limit if offset + limit < request.product_count else None,
        "products": products,
        "output_csv_url": f"{base}/api/requests/{request.id}/output.csv" if finished else None,
        "webhook": webhook,
    }


def iter_output_rows(ctx: Context, request_id: str) -> Iterator[OutputRow]:
    """Every product in input order, read a page at a time."""
    start = 0
    while page := _products_page(ctx, request_id, start, PAGE):
        for product, images in page:
            yield OutputRow(
                serial_number=product.serial_number,
                product_name=product.name,
                input_urls=[i.input_url for i in images],
                output_urls=[i.output_url if i.status == st.DONE else None for i in images],
            )
        start += PAGE


def iter_image_rows(ctx: Context, request_id: str) -> Iterator[ImageRow]:
    """Every image in input order (product, then position), its current state; paged reads."""
    start = 0
    while page := _products_page(ctx, request_id, start, PAGE):
        for product, images in page:
            for image in images:
                facts = image_document(image)
                done = image.status == st.DONE
                saved = (
                    st.Savings(1, image.bytes_in, image.bytes_out).saved_percent
                    if done and image.bytes_in is not None and image.bytes_out is not None
                    else None
                )
                error = facts["error"] or {}
                yield ImageRow(
                    serial_number=product.serial_number,
                    product_name=product.name,
                    position=image.position + 1,
                    input_url=image.input_url,
                    output_url=facts["output_url"],
                    status=image.status,
                    error_code=error.get("code"),
                    error_message=error.get("message"),
                    bytes_in=facts["bytes_in"],
                    bytes_out=facts["bytes_out"],
                    saved_percent=saved,
                    width=facts["width"],
                    height=facts["height"],
                    format=facts["format"],
                    quality=facts["quality"],
                )
        start += PAGE
