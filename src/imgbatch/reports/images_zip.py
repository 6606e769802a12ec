"""A finished request's images as one ZIP: `<serial>/<position>-<product name>.<ext>` per
done image, and `output.csv` at the root, streamed from the store as the archive is sent.

The images are read a page of products at a time from the ledger and each object is
streamed from the store (file or S3) into `zipstream`, so neither the archive nor a list
of its entries is held. The object of the next image is opened while the current one is
sent (`LOOKAHEAD`), so an S3 round trip overlaps the sending.
"""

from __future__ import annotations

import logging
import unicodedata
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select

from imgbatch.catalogue import iter_output_csv
from imgbatch.context import Context
from imgbatch.ledger import Image, Product, Request
from imgbatch.ledger import statuses as st

from .status import iter_output_rows
from .zipstream import Entry, iter_zip

log = logging.getLogger(__name__)

PAGE = 1000  # products per ledger read
LOOKAHEAD = 4  # objects opened ahead of the one being sent
MAX_NAME = 80  # characters of a product's name in an entry's name


def safe_name(name: str) -> str:
    """A product name fit for a file name on every system: letters and digits of any
    script, `-`, `_` and `.` kept, anything else (spaces, `/`, `\\`, `:`, control
    characters…) one `_`, no leading or trailing dots, at most 80 characters."""
    cleaned: list[str] = []
    for char in unicodedata.normalize("NFC", name):
        keep = char.isalnum() or char in "-_."
        if keep or not cleaned or cleaned[-1] != "_":
            cleaned.append(char if keep else "_")
    text = "".join(cleaned)[:MAX_NAME].strip("._")
    return text or "image"


def entry_name(serial: int, position: int, product_name: str, output_key: str) -> str:
    """`<serial>/<position>-<safe name>.<ext>`; positions from 1, as in images.csv."""
    extension = output_key.rsplit(".", 1)[-1] if "." in output_key else "bin"
    return f"{serial}/{position + 1}-{safe_name(product_name)}.{extension}"


def iter_images_zip(ctx: Context, request: Request) -> Iterator[bytes]:
    """The archive's bytes (call only for a final request: its images no longer change)."""
    return iter_zip(_entries(ctx, request))


def _entries(ctx: Context, request: Request) -> Iterator[Entry]:
    finished = request.completed_at or datetime.now(UTC)

    def output_csv() -> Iterator[bytes]:
        rows = iter_output_rows(ctx, request.id)
        return (chunk.encode("utf-8") for chunk in iter_output_csv(rows))

    yield Entry("output.csv", finished, output_csv)
    with ThreadPoolExecutor(max(1, LOOKAHEAD), thread_name_prefix="zip-open") as pool:
        opened: list[tuple[Any, Future[Iterator[bytes]]]] = []
        for image in _done_images(ctx, request.id):
            opened.append((image, pool.submit(ctx.storage.iter_chunks, image.output_key)))
            if len(opened) > LOOKAHEAD:
                yield from _entry(ctx, *opened.pop(0))
        while opened:
            yield from _entry(ctx, *opened.pop(0))


def _entry(ctx: Context, image: Any, first: Future[Iterator[bytes]]) -> Iterator[Entry]:
    """The image's entry, sending the object already opened (a second read opens again)."""
    try:
        stream = first.result()
    except KeyError:  # recorded done but not in the store: left out, said in the log
        log.warning("image object missing from the ZIP: %s", image.output_key)
        return
    streams = [stream]

    def open_object() -> Iterator[bytes]:
        return streams.pop() if streams else ctx.storage.iter_chunks(image.output_key)

    modified = image.finished_at or datetime.now(UTC)
    name = entry_name(image.serial_number, image.position, image.name, image.output_key)
    yield Entry(name, modified, open_object)


def _done_images(ctx: Context, request_id: str) -> Iterator[Any]:
    """Done images with their product's serial and name, in input order, a page at a time."""
    start = 0
    while True:
        with ctx.db.session() as session:
            rows = session.execute(
                select(
                    Product.position.label("product_position"),
                    Product.serial_number,
                    Product.name,
                    Image.position,
                    Image.output_key,
                    Image.finished_at,
                )
                .join(Image, Image.product_id == Product.id)
                .where(
                    Product.request_id == request_id,
                    Product.position >= start,
                    Product.position < start + PAGE,
                    Image.status == st.DONE,
                    Image.output_key.is_not(None),
                )
                .order_by(Product.position, Image.position)
            ).all()
            more = session.execute(
                select(Product.id)
                .where(Product.request_id == request_id, Product.position >= start + PAGE)
                .limit(1)
            ).first()
        yield from rows
        if more is None:
            return
        start += PAGE
